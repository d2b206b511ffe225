"""`inspect_checkpoint` matches a quantized checkpoint against the quantized model it records."""

from helpers import mixed_config, random_model

from trillion.checkpoint import inspect_checkpoint, save_model
from trillion.quant import quantize_model


def test_a_quantized_checkpoint_inspects_clean(tmp_path):
    model = random_model(mixed_config(dim=64, moe_inter_dim=32, q_lora_rank=32))
    quantize_model(model, "int8")
    save_model(model, tmp_path / "q")
    info = inspect_checkpoint(tmp_path / "q")
    assert info["missing"] == [] and info["unexpected"] == [] and info["problems"] == []
