"""`trillion plan`: the table, --json, --published, and bad input as one line with a non-zero exit."""

import json

import pytest

from trillion.cli.main import main

CPU = ["--hardware", "cpu", "--bandwidth", "20", "--flops", "100"]  # given: nothing is measured


def test_plan_table(capsys):
    assert main(["plan", "tiny", "--hardware", "h200", "--devices", "4", "--context", "4K"]) == 0
    out = capsys.readouterr().out
    for text in ("tiny on 4 x NVIDIA H200", "accepted by trillion.parallel.layout.check_layout",
                 "[M1]", "[B1]", "[D1]", "[D4]", "[P1]", "[T1]", "tokens/s per sequence"):
        assert text in out


def test_plan_json(capsys):
    assert main(["plan", "bench-94m", *CPU, "--precision", "fp32", "--context", "512", "--batch", "1",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["layout"] == {"world": 1, "dp": 1, "tp": 1, "instances": 1, "redundant_experts": 0,
                           "expert_slots": 8}
    assert d["decode"]["binding"] == "memory" and d["batch"] == 1
    assert d["hardware_figures"]["bandwidth"] == 20e9
    # memory-bound at batch 1: tokens/s = bandwidth / bytes read per token
    assert d["decode_tokens_per_s_sequence"] == pytest.approx(
        20e9 / (d["decode"]["detail"]["weights_read_bytes"] + d["decode"]["detail"]["state_read_bytes"]))


def test_published_table(capsys):
    assert main(["plan", "--published"]) == 0
    out = capsys.readouterr().out
    assert "DeepSeek V3/R1 service, decode" in out and "CloudMatrix-Infer, prefill" in out
    assert out.count("\n") == 2 + 4


@pytest.mark.parametrize("argv,message", [
    (["tiny", "--hardware", "tpu"], "unknown hardware 'tpu'"),
    (["nope", "--hardware", "h200"], "'nope' is neither a flavor"),
    (["v4-flash", "--hardware", "h800", "--devices", "1"], "fits no layout"),
    (["tiny", "--hardware", "h200", "--context", "1M"], "context 1,048,576 tokens: tiny takes 1 to 4,096"),
    (["tiny", *CPU, "--devices", "2"], "--devices 1, not 2"),
    (["tiny", "--hardware", "h200", "--devices", "3", "--dp", "3", "--tp", "1"],
     "fits no layout: world size 3 does not divide the 8 routed experts"),
    (["tiny"], "give a MODEL and --hardware NAME"),
])
def test_bad_input_is_one_line_and_exit_1(capsys, argv, message):
    assert main(["plan", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("trillion plan: error: ") and message in err and err.count("\n") == 1


def test_a_bad_context_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["plan", "tiny", "--hardware", "h200", "--context", "lots"])
    assert e.value.code == 2 and "expected a token count" in capsys.readouterr().err
