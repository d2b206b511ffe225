"""`trillion quantize` through the CLI entry point: output, the checkpoint it writes, bad input."""

import json

import torch

from trillion.checkpoint import load_model, save_model
from trillion.cli.main import main
from trillion.quant import Int8Linear, MXFP4Linear, quantized_modules

from .conftest import quant_config


def test_quantize_reports_sizes_and_error_and_writes_a_loadable_checkpoint(model, tmp_path, capsys):
    src = save_model(model, tmp_path / "src")
    out = tmp_path / "q"
    assert (
        main(["quantize", "--model", str(src), "--out", str(out), "--scheme", "int8", "--prompt-len", "16"])
        == 0
    )
    text = capsys.readouterr().out
    assert "size before" in text and "on disk" in text and "size after" in text
    assert "logit error  max" in text and "top-1 agreement" in text and "KL" in text
    assert json.loads((out / "config.json").read_text())["quantization_config"]["scheme"] == "int8"
    q = load_model(out)
    assert type(q.layers[0].attn.wq_a) is Int8Linear and q.quant_scheme.name == "int8"

    flavor = tmp_path / "flavor"
    assert (
        main(
            [
                "quantize",
                "--model",
                "tiny",
                "--out",
                str(flavor),
                "--scheme",
                "v4-release",
                "--act-quant",
                "--prompt-len",
                "8",
            ]
        )
        == 1
    )  # tiny's widths of 64 cannot take activation blocks of 128
    assert "multiple of 128" in capsys.readouterr().err and not flavor.exists()
    assert (
        main(
            [
                "quantize",
                "--model",
                "tiny",
                "--out",
                str(flavor),
                "--scheme",
                "v4-release",
                "--prompt-len",
                "8",
            ]
        )
        == 0
    )
    mods = quantized_modules(load_model(flavor))
    assert type(mods["layers.0.ffn.experts.0.w1"]) is MXFP4Linear


def test_quantize_keeps_the_sources_dtype_for_float_tensors(tmp_path):
    """int8 of a bf16 checkpoint stores the tensors it does not quantise in bf16 (16.10 MB -> 13.99 MB
    for the demo), float32 with --dtype float32; the config records it."""
    from safetensors import safe_open

    src = save_model(_model(), tmp_path / "src", dtype=torch.bfloat16)
    for flag, want in (([], "BF16"), (["--dtype", "float32"], "F32")):
        out = tmp_path / f"q{len(flag)}"
        args = ["quantize", "--model", str(src), "--out", str(out), "--scheme", "int8", "--prompt-len", "8"]
        assert main([*args, *flag]) == 0
        with safe_open(str(out / "model.safetensors"), framework="pt") as f:
            assert (f.get_slice("embed.weight").get_dtype(), f.get_slice("layers.0.attn.wq_a.weight").get_dtype()) == (
                want, "I8")
        assert json.loads((out / "config.json").read_text())["dtype"] == {"BF16": "bfloat16", "F32": "float32"}[want]


def test_bad_input_is_named_and_leaves_nothing_behind(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["quantize", "--model", "tiny", "--out", str(out), "--scheme", "int5"]) == 1
    assert "unknown quantisation scheme 'int5'" in capsys.readouterr().err
    assert main(["quantize", "--model", "tiny", "--out", str(out), "--scheme", "int8", "--skip", "["]) == 1
    err = capsys.readouterr().err
    assert "--skip '[': not a regular expression (unterminated character set" in err and "Traceback" not in err

    odd = save_model(_model(moe_inter_dim=48), tmp_path / "odd")
    assert (
        main(["quantize", "--model", str(odd), "--out", str(out), "--scheme", "mxfp8", "--prompt-len", "8"])
        == 1
    )
    assert "layers.0.ffn.experts.0.w2.weight [128, 48]" in capsys.readouterr().err

    bad = _model()
    bad.layers[3].attn.wo_b.weight.data[1, 2] = float("nan")
    nan = save_model(bad, tmp_path / "nan")
    assert (
        main(["quantize", "--model", str(nan), "--out", str(out), "--scheme", "int8", "--prompt-len", "8"])
        == 1
    )
    assert "tensor layers.3.attn.wo_b.weight [128, 128]: holds 1 NaN" in capsys.readouterr().err

    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [
        "nan",
        "odd",
    ]  # no temp folders


def _model(**overrides):
    from trillion.model import Transformer
    from trillion.model.init import init_weights

    return init_weights(Transformer(quant_config(**overrides)), seed=0).eval()


def test_quantized_model_generates(tmp_path, capsys):
    out = tmp_path / "q"
    assert (
        main(["quantize", "--model", "tiny", "--out", str(out), "--scheme", "int4-g32", "--prompt-len", "8"])
        == 0
    )
    capsys.readouterr()
    from trillion.engine import LLM, SamplingParams

    llm = LLM(str(out), max_seqs=1, max_model_len=64)
    assert type(llm.model.layers[0].attn.wq_a).__name__ == "Int4Linear"
    got = llm.generate([[5, 6, 7, 8]], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True))[0]
    with torch.no_grad():
        ids = [5, 6, 7, 8]
        for _ in range(4):
            ids.append(int(llm.model(torch.tensor([ids]))[0, -1].argmax()))
    assert got.token_ids == ids[4:]
