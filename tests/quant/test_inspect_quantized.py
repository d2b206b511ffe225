"""`inspect_checkpoint` matches a quantized checkpoint against the quantized model it records, names
its scheme and counts its quantised weights by format."""

import pytest
from helpers import mixed_config, random_model

from trillion.checkpoint import format_inspection, inspect_checkpoint, save_model
from trillion.quant import get_scheme, quantize_model, quantized_modules


def test_a_quantized_checkpoint_inspects_clean(tmp_path):
    model = random_model(mixed_config(dim=64, moe_inter_dim=32, q_lora_rank=32))
    quantize_model(model, "int8")
    save_model(model, tmp_path / "q")
    info = inspect_checkpoint(tmp_path / "q")
    assert info["missing"] == [] and info["unexpected"] == [] and info["problems"] == []


@pytest.mark.parametrize("scheme", ["int8", "int4-g32", "v4-release", "fp8-block", "mxfp8", "mxfp4", "hif8"])
def test_inspect_names_the_scheme_and_counts_its_weights(tmp_path, scheme):
    model = random_model(mixed_config(dim=64, moe_inter_dim=32, q_lora_rank=32))
    quantize_model(model, get_scheme(scheme), skip=[r"^mtp\."])  # skipped modules are not counted
    want = {}
    for m in quantized_modules(model).values():
        want[m.fmt] = want.get(m.fmt, 0) + 1
    save_model(model, tmp_path / "q")
    info = inspect_checkpoint(tmp_path / "q")
    q = info["quantization"]
    assert info["ok"] and q["scheme"] == scheme and q["formats"] == dict(sorted(want.items()))
    assert q["weights"] == q["scales"] == len(quantized_modules(model))
    s = get_scheme(scheme)
    line = next(x for x in format_inspection(info).splitlines() if x.startswith("quantization"))
    roles = f"dense {s.dense}, experts {s.experts}, head float"
    counts = ", ".join(f"{n} {f}" for f, n in sorted(want.items()))
    assert line == f"quantization  scheme {scheme} ({roles}): {q['weights']} quantised weights ({counts}), {q['scales']} scales"
