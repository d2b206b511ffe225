"""Files shipped inside the package: the demo model (`demo/`: config.json, model.safetensors in
bf16, tokenizer.json, training.json), trained by `trillion train` on the Python standard library
(docs/training.md has the command).

The name `demo` stands for this folder wherever a model is named (`trillion generate --model demo`,
`trillion.LLM("demo")`, `load_model("demo")`), and it is the default model of generate, chat, serve,
eval and quantize. An existing folder called `demo` in the working directory wins, as a folder wins
over a flavor. The untrained architecture is the flavor `demo-random` (seeded random weights).
"""

from __future__ import annotations

from pathlib import Path

DEMO = Path(__file__).parent / "demo"

# Names of the models shipped in the package -> their folders.
SHIPPED = {"demo": DEMO}
DEFAULT_MODEL = "demo"


def demo_path() -> Path:
    """The folder of the shipped demo model; an error names what is missing if it is not installed."""
    return _installed(DEMO)


def shipped_model(spec: object) -> Path | None:
    """The folder a shipped model's name (`demo`) stands for; None for anything else.

    None also when a folder of that name exists here: a folder the user has wins.
    """
    name = str(spec)
    if name not in SHIPPED or Path(name).is_dir():
        return None
    return _installed(SHIPPED[name])


def _installed(folder: Path) -> Path:
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"{folder}: the {folder.name} model is not installed (expected config.json and model.safetensors); "
            "pass a model folder, or train one with `trillion train` (docs/training.md)"
        )
    return folder


__all__ = ["DEFAULT_MODEL", "DEMO", "SHIPPED", "demo_path", "shipped_model"]
