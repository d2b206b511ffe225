"""Low-precision number formats in plain PyTorch: element codecs and block quantisers.

Element codecs (one torch.uint8 code per element; see codec.py for the rounding table):
  encode(x, fmt, *, saturate=None) -> uint8      decode(codes, fmt, dtype=float32) -> values
  fmt: "e4m3" (FP8 E4M3FN), "e8m0" (UE8M0 scales), "e2m1" (FP4), "hif8" (Huawei HiFloat8)

Block quantisers (DeepSeek's conventions; see blocks.py and mx.py):
  quantize_fp8_blocks / dequantize_fp8_blocks   128 x 128 weight blocks, UE8M0 or float32 scales
  quantize_fp4_blocks / dequantize_fp4_blocks   MXFP4: 32 along K, two codes per int8 byte
  quantize_mx / dequantize_mx                   OCP MX (e4m3 or e2m1 elements) along the last dim
  fake_quant_fp8 / fake_quant_fp4               activation quantise-dequantise per block
  hadamard                                      normalised fast Walsh-Hadamard transform
"""

from trillion.formats.blocks import (
    dequantize_fp4_blocks,
    dequantize_fp8_blocks,
    fake_quant_fp4,
    fake_quant_fp8,
    quantize_fp4_blocks,
    quantize_fp8_blocks,
)
from trillion.formats.codec import FORMATS, all_codes, decode, encode
from trillion.formats.hadamard import hadamard
from trillion.formats.mx import dequantize_mx, pack_fp4, quantize_mx, unpack_fp4

__all__ = [
    "FORMATS",
    "all_codes",
    "decode",
    "dequantize_fp4_blocks",
    "dequantize_fp8_blocks",
    "dequantize_mx",
    "encode",
    "fake_quant_fp4",
    "fake_quant_fp8",
    "hadamard",
    "pack_fp4",
    "quantize_fp4_blocks",
    "quantize_fp8_blocks",
    "quantize_mx",
    "unpack_fp4",
]
