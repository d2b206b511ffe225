"""Ship a trained model: every floating tensor in bf16 (half the bytes), tokenizer and training.json
alongside, and the held-out evaluation redone on the shipped weights so the numbers in
training.json are the ones `trillion eval` reproduces.

    python -m trillion.train.export RUN/model trillion/assets/demo

The float32 policy of `trillion.model.dtypes` (norms, mHC, router, head computed in float32)
still applies on load: `load_model` upcasts those tensors, so only the storage is bf16.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ..checkpoint import load_model, save_model
from ..checkpoint.atomic import check_destination
from ..errors import UserError
from .evaluate import evaluate_folder, training_info

TRAINING_JSON = "training.json"


def export_model(
    src: str | Path, dest: str | Path, dtype: torch.dtype = torch.bfloat16, *, overwrite: bool = False
) -> dict:
    """Write `src` (a trained model folder) to `dest` with every floating tensor in `dtype`.

    dest: written as `save_model` writes (a folder holding other files needs overwrite=True; they
    are kept).
    Returns the held-out evaluation of the exported weights (also stored in dest/training.json,
    the float32 run's own under "eval_float32").
    """
    src, dest = Path(src), Path(dest)
    check_destination(dest, overwrite=overwrite)
    model = load_model(src, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.to(dtype)
    save_model(model, dest, layout="hf", copy_files_from=src, overwrite=overwrite)
    info = training_info(src)
    info["eval_float32"] = info.pop("eval", None)
    info["storage_dtype"] = str(dtype).removeprefix("torch.")
    (dest / TRAINING_JSON).write_text(json.dumps(info, indent=2) + "\n")
    result = evaluate_folder(dest)
    info["eval"] = {k: result[k] for k in ("eval_loss", "eval_ppl", "eval_tokens")}
    (dest / TRAINING_JSON).write_text(json.dumps(info, indent=2) + "\n")
    return info["eval"]


def folder_bytes(folder: str | Path) -> int:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m trillion.train.export", description=__doc__.split("\n\n")[0])
    ap.add_argument("src", help="a trained model folder (RUN/model)")
    ap.add_argument("dest", help="where to write the shipped copy (its checkpoint files are replaced)")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a dest that holds other files: replace a checkpoint's files there, keep the rest",
    )
    args = ap.parse_args(argv)
    try:
        result = export_model(args.src, args.dest, overwrite=args.overwrite)
    except (FileNotFoundError, UserError) as e:  # bad input: one line (anything else is a bug)
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 1
    print(
        f"{args.dest}: {folder_bytes(args.dest) / 1e6:.2f} MB; held-out loss {result['eval_loss']:.4f}, "
        f"perplexity {result['eval_ppl']:.2f} over {result['eval_tokens']} tokens"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
