"""Quantised models: weights that stay quantised in memory, swapped in after construction.

  quantize_model(model, scheme, *, skip=(), inplace=True)   nn.Linear -> QuantLinear, per the scheme
  dequantize_model(model)                                   and back
  get_scheme(name, **changes) / SCHEMES / Scheme            which weights get which format
  QuantLinear and one class per format (FORMATS)            int8, int4, fp8, mxfp8, mxfp4, hif8
  logit_error(ref, test) / fixed_tokens(vocab)              max/mean |diff|, top-1 agreement, KL
  model_nbytes(model)                                       bytes of parameters and buffers
  set_kernel_dtype(model, dtype)                            int8/int4 CPU kernels: bf16 (fast) or float32

Checkpoints: `trillion.save_model` writes a quantised model with its scheme in config.json, and
`trillion.load_model` loads it with the weights still quantised (or `quantize=` asks for a scheme).
The CLI is `trillion quantize`; the measurements are in docs/quantization.md.
"""

from .linear import (
    FORMATS,
    FP8BlockLinear,
    HiF8Linear,
    Int4Linear,
    Int8Linear,
    MXFP4Linear,
    MXFP8Linear,
    QuantLinear,
)
from .metrics import fixed_tokens, logit_error
from .schemes import SCHEMES, Scheme, get_scheme, weight_role
from .swap import (
    dequantize_model,
    is_quantized,
    model_nbytes,
    quantize_model,
    quantized_modules,
    set_kernel_dtype,
)

__all__ = [
    "FORMATS",
    "SCHEMES",
    "FP8BlockLinear",
    "HiF8Linear",
    "Int4Linear",
    "Int8Linear",
    "MXFP4Linear",
    "MXFP8Linear",
    "QuantLinear",
    "Scheme",
    "dequantize_model",
    "fixed_tokens",
    "get_scheme",
    "is_quantized",
    "logit_error",
    "model_nbytes",
    "quantize_model",
    "quantized_modules",
    "set_kernel_dtype",
    "weight_role",
]
