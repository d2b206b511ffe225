"""The `trillion` entry point: which errors become one line, exit statuses, help that shows defaults,
and the OpenMP setting made before torch loads."""

import argparse
import os
import subprocess
import sys

import pytest

from trillion.cli import generate
from trillion.cli.main import build_parser, main
from trillion.errors import UnknownName, UserError


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_user_errors_are_one_line_and_exit_1(tmp_path, capsys):
    assert main(["generate", "--model", "no-such-model", "-p", "x"]) == 1
    line = one_line(capsys.readouterr().err)
    assert line.startswith("trillion generate: error: no-such-model: neither a checkpoint folder nor a flavor")
    assert main(["generate", "--prompt-file", str(tmp_path / "missing.txt")]) == 1
    assert one_line(capsys.readouterr().err) == (
        f"trillion generate: error: {tmp_path / 'missing.txt'}: No such file or directory"
    )


def test_an_internal_bug_keeps_its_traceback(monkeypatch):
    """Only UserError (and path errors) are turned into one line: a ValueError or KeyError from a bug
    must reach the user with its traceback, not pose as a mistake in their input."""

    def buggy(args):
        raise ValueError("an internal bug")

    monkeypatch.setattr(generate, "run", buggy)
    with pytest.raises(ValueError, match="an internal bug"):
        main(["generate", "-p", "x"])
    monkeypatch.setattr(generate, "run", lambda args: {}["missing key"])
    with pytest.raises(KeyError):
        main(["generate", "-p", "x"])


def test_user_error_types():
    assert issubclass(UserError, ValueError)  # callers catching ValueError (the server's 400s) still do
    e = UnknownName("unknown flavor 'x'")
    assert isinstance(e, KeyError) and str(e) == "unknown flavor 'x'"  # not KeyError's quoted repr
    from trillion.checkpoint import CheckpointError
    from trillion.config import ConfigError

    assert issubclass(CheckpointError, UserError) and issubclass(ConfigError, UserError)


def test_ctrl_c_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "run", interrupted)
    assert main(["generate", "-p", "x"]) == 130
    assert one_line(capsys.readouterr().err) == "trillion generate: interrupted"


@pytest.mark.parametrize("option", ["--threads", "--prefill-chunk", "--max-seqs", "--num-draft-tokens"])
@pytest.mark.parametrize("value", ["0", "-2"])
def test_engine_numbers_are_checked_when_parsed(option, value, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", option, value])
    assert e.value.code == 2
    err = capsys.readouterr().err  # argparse names an option by all its names: --max-seqs/--max-num-seqs
    assert f"argument {option}" in err and f": must be >= 1, got {value}" in err


@pytest.mark.parametrize("command", ["chat", "serve", "eval", "quantize", "train"])
def test_threads_are_checked_by_every_command(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--threads", "-2", *(["--out", "x"] if command == "train" else [])])
    assert "argument --threads: must be >= 1, got -2" in capsys.readouterr().err


def _subparsers(parser):
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_help_shows_defaults():
    commands = _subparsers(build_parser())
    for name, p in commands.items():
        for action in p._actions:
            d = action.default
            if action.option_strings and d not in (None, argparse.SUPPRESS) and d is not False and d != []:
                assert action.help, f"trillion {name} {action.option_strings[0]}: no help, so no default shown"
    shown = {
        "generate": ["(default: 64)", "(default: 0.8)", "(default: demo)", "(default: 8)", "(default: 512)"],
        "chat": ["(default: 256)", "(default: demo)"],
        "train": ["(default: 800)", "(default: 0.005)"],
        "eval": ["(default: float32)", "(default: demo)"],
        "quantize": ["(default: demo)", "(default: 64)"],
        "serve": ["(default: 8000)"],
    }
    for name, parts in shown.items():
        text = " ".join(commands[name].format_help().split())  # unwrap the lines
        for part in parts:
            assert part in text, (name, part)


def test_vllm_names_are_accepted():
    parse = build_parser().parse_args
    a = parse(["generate", "--max-tokens", "5", "--max-num-seqs", "3"])
    assert a.max_new_tokens == 5 and a.max_seqs == 3
    assert parse(["chat", "--max-num-seqs", "2", "--max-tokens", "7"]).max_seqs == 2
    for command in ("generate", "chat", "serve", "eval"):
        assert parse([command, "--dtype", "bf16"]).dtype == "bf16", command


def test_entry_point_sets_omp_passive_on_a_busy_machine_unless_the_user_chose(monkeypatch, capsys):
    from trillion.cli import main as entry

    monkeypatch.setenv("OMP_WAIT_POLICY", "unset-below")  # recorded, so the test leaves the env as it was
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setattr(entry.os, "getloadavg", lambda: (0.1, 0.1, 0.1))  # idle: OpenMP's spinning default
    assert main(["params", "tiny", "--json"]) == 0
    assert "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setattr(entry.os, "getloadavg", lambda: (entry.BUSY_LOAD, 0.1, 0.1))  # another process runs
    assert main(["params", "tiny", "--json"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["params", "tiny", "--json"]) == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    capsys.readouterr()


def test_the_entry_module_imports_no_torch():
    """OpenMP reads OMP_WAIT_POLICY once, when torch loads it: `main` can only set it first if importing
    the entry point (and the `trillion` package above it) leaves torch unloaded."""
    code = "import sys, trillion.cli.main; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_closed_pipe_ends_quietly():
    """`trillion generate | head -c 0`: the reader is gone before the first write. Exit like a Unix tool
    killed by SIGPIPE, no traceback, no "Exception ignored" at shutdown."""
    cmd = [sys.executable, "-m", "trillion.cli", "generate", "-p", "def f():", "--max-new-tokens", "4",
           "--threads", "1", "--max-seqs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 141 and err == ""


def test_the_shipped_model_by_name_in_other_commands(capsys):
    import json

    assert main(["params", "demo", "--json"]) == 0
    from trillion.flavors import FLAVORS
    from trillion.params import count_params

    assert json.loads(capsys.readouterr().out)["total"] == count_params(FLAVORS["demo-random"]).total
    assert main(["inspect", "demo"]) == 0
    assert "NOT LOADABLE" not in capsys.readouterr().out
