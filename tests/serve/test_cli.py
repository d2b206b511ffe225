"""`trillion serve`'s flags: a bad port is a one-line usage error; vLLM's --max-num-seqs, --compile
and --default-max-tokens reach the service."""

import pytest

from trillion.cli import serve as serve_cli
from trillion.cli.main import build_parser, main


@pytest.mark.parametrize("port, why", [("99999", "a port is 1 to 65535, got 99999"),
                                       ("0", "a port is 1 to 65535, got 0"), ("-5", "a port is 1 to 65535, got -5"),
                                       ("http", "expected an integer, got 'http'")])
def test_a_bad_port_is_a_one_line_error(capsys, monkeypatch, port, why):
    def never(*a, **kw):
        raise AssertionError("a bad port must be refused before the model loads")

    monkeypatch.setattr("trillion.serve.load_service", never)
    with pytest.raises(SystemExit) as e:
        main(["serve", "--port", port])
    assert e.value.code == 2
    err = capsys.readouterr().err  # argparse's usage, then the one-line error
    assert err.strip().splitlines()[-1] == f"trillion serve: error: argument --port: {why}"
    assert "Traceback" not in err


def test_flags_reach_the_service(monkeypatch, capsys):
    seen = {}

    class FakeService:
        tokenizer = object()
        model_name, max_model_len, default_max_tokens = "m", 128, 9

    def load_service(model, **kw):
        seen.update(kw, model=model)
        return FakeService()

    def serve(service, **kw):
        seen["serve"] = kw

    monkeypatch.setattr("trillion.serve.load_service", load_service)
    monkeypatch.setattr("trillion.serve.serve", serve)
    assert main(["serve", "--model", "tiny", "--max-num-seqs", "3", "--compile", "--default-max-tokens", "9",
                 "--port", "65535"]) == 0
    assert (seen["max_batch"], seen["compile"], seen["default_max_tokens"]) == (3, True, 9)
    assert seen["serve"]["port"] == 65535
    assert "chat max_tokens default 9" in capsys.readouterr().out
    for flag in ("--max-seqs", "--max-batch"):  # one limit, three names
        assert build_parser().parse_args(["serve", flag, "5"]).max_batch == 5
    args = build_parser().parse_args(["serve"])
    assert (args.compile, args.default_max_tokens, args.max_batch) == (None, None, 8)  # None: the engine's default mode
    assert main(["serve", "--model", "tiny", "--default-max-tokens", "0"]) == 1
    assert "--default-max-tokens must be >= 1, got 0" in capsys.readouterr().err
    assert serve_cli.port_number("8000") == 8000
