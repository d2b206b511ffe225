"""Checkpoints: DeepSeek-V4 models in transformers' layout ("hf") and the release's ("deepseek").

  load_model(path_or_flavor, dtype=, device=, seed=, fake_quant=)   folder or flavor -> Transformer
  save_model(model, path, layout=, max_shard_bytes=, dtype=,         Transformer -> folder (atomic; never
             copy_files_from=, overwrite=)                           deletes what it did not write: atomic.py)
  load_model(..., quantize=), save_model(quantised model)            trillion.quant: weights stay quantised
  inspect_checkpoint(path) / format_inspection(info)                 what a folder holds, as a dict / text
  CheckpointError                                                    every failure, naming file and tensor

Name tables live in `layouts`, storage of the release in `official`, file discovery in `index`, the
files other tools read beside the weights (tokenizer_config.json, generation_config.json) in `side_files`.
"""

from .errors import CheckpointError
from .inspect import format_inspection, inspect_checkpoint
from .load import load_model
from .save import save_model

__all__ = ["CheckpointError", "format_inspection", "inspect_checkpoint", "load_model", "save_model"]
