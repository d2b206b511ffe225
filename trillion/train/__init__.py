"""Training DeepSeek-V4-architecture models from scratch on one machine (`trillion train`).

  train(TrainConfig) -> TrainResult          the whole run (loop.py): data, model, steps, checkpoints
  TrainConfig                                 every setting of a run (config.py), saved with it
  evaluate_folder(path, ...)                  held-out loss and perplexity of a trained model (evaluate.py)
  complete(model, tokenizer, prompt)          greedy sample completions (sample.py)

One concept per module: corpus (documents and split), tokenizer (byte-level BPE), data (packing,
cursor), dataset (sources -> token streams), optim (Muon + AdamW, schedule), balance (bias update,
balance loss, hash tables), indexer_loss (KL alignment of the lightning indexer), objective (the
loss of a batch, evaluation), state (checkpoints), metrics (JSON lines, charts), export (the bf16
copy that ships). docs/training.md describes the run and the shipped demo model.
"""

from .config import TrainConfig
from .evaluate import evaluate_folder
from .loop import TrainResult, train
from .sample import complete

__all__ = ["TrainConfig", "TrainResult", "complete", "evaluate_folder", "train"]
