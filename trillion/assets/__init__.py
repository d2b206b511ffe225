"""Files shipped inside the package: the demo model (`demo/`: config.json, model.safetensors in
bf16, tokenizer.json, training.json), trained by `trillion train` on the Python standard library
(docs/training.md has the command). `demo_path()` is the default model of generate, chat and serve.
"""

from __future__ import annotations

from pathlib import Path

DEMO = Path(__file__).parent / "demo"


def demo_path() -> Path:
    """The folder of the shipped demo model; an error names what is missing if it is not installed."""
    if not (DEMO / "config.json").is_file() or not (DEMO / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{DEMO}: the demo model is not installed (expected config.json and model.safetensors); "
            "pass a model folder, or train one with `trillion train` (docs/training.md)"
        )
    return DEMO


__all__ = ["DEMO", "demo_path"]
