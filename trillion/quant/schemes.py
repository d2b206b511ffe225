"""Quantisation schemes: which weights get which storage format. Plain data, one registry.

A V4 model has three kinds of quantisable weights (module names as in DeepSeek's checkpoint):

  dense    attention wq_a wq_b wkv wo_a wo_b, indexer wq_b, shared experts w1 w2 w3, MTP e_proj h_proj
           (the weights the release stores in FP8)
  experts  routed experts w1 w2 w3 (the release: MXFP4)
  head     the output head (the release keeps it bf16; off unless a scheme asks)

Everything else stays as it is: embedding, norms, mHC, sinks, the router (`Gate`, not a Linear), the
compressors' wkv / wgate (float32, as DeepSeek keeps them) and the indexer's weights_proj (bf16 in
the release). A scheme records itself in a checkpoint's config.json (`to_config`), and a checkpoint
is read back by what its config says (`from_config`), never by its file or folder name.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from ..errors import UserError

FORMATS = ("int8", "int4", "fp8", "mxfp8", "mxfp4", "hif8")
ROLES = ("dense", "experts", "head")

_ROLE_PATTERNS = (
    ("experts", re.compile(r"(^|\.)ffn\.experts\.\d+\.w[123]$")),
    (
        "dense",
        re.compile(
            r"\.attn\.(wq_a|wq_b|wkv|wo_a|wo_b)$|\.attn\.indexer\.wq_b$|\.ffn\.shared_experts\.w[123]$"
            r"|^mtp\.\d+\.[eh]_proj$"
        ),
    ),
    ("head", re.compile(r"^head$")),
)


def weight_role(module_name: str) -> str | None:
    """'dense', 'experts', 'head', or None for a Linear that is never quantised."""
    for role, pattern in _ROLE_PATTERNS:
        if pattern.search(module_name):
            return role
    return None


@dataclass(frozen=True)
class Scheme:
    """One quantisation scheme: a storage format (or None: keep float) per kind of weight."""

    name: str
    dense: str | None
    experts: str | None
    head: str | None = None
    group_size: int = 128  # int4: scales per this many inputs
    act_quant: bool = False  # FP8 act_quant (UE8M0, blocks of 128 along K) before each quantised matmul
    description: str = ""

    def __post_init__(self):
        for role in ROLES:
            fmt = getattr(self, role)
            if fmt is not None and fmt not in FORMATS:
                raise UserError(f"scheme {self.name!r}: {role} format {fmt!r} is not one of {FORMATS}")

    def format_for(self, module_name: str) -> str | None:
        role = weight_role(module_name)
        return getattr(self, role) if role else None

    def params(self, fmt: str) -> dict:
        """Keyword arguments of the module class for `fmt` beyond the shape."""
        return {"group_size": self.group_size} if fmt == "int4" else {}

    def replace(self, **changes) -> Scheme:
        return dataclasses.replace(self, **changes)

    def to_config(self) -> dict:
        """The `quantization_config` of a checkpoint holding a model quantised with this scheme."""
        out = {
            "quant_method": "trillion",
            "scheme": self.name,
            "dense": self.dense,
            "experts": self.experts,
            "head": self.head,
            "activation_scheme": "dynamic" if self.act_quant else "none",
        }
        if "int4" in (self.dense, self.experts, self.head):
            out["group_size"] = self.group_size
        if self.dense == "fp8":
            # the release's keys, so that DeepSeek's tools read the FP8 weights of our checkpoints
            out.update(quant_method="fp8", fmt="e4m3", scale_fmt="ue8m0", weight_block_size=[128, 128])
        return out

    @classmethod
    def from_config(cls, qc: dict) -> Scheme:
        """Inverse of to_config (the registry only supplies defaults for keys a config lacks)."""
        name = qc["scheme"]
        base = SCHEMES.get(name)
        fields = {}
        for role in ROLES:
            if role in qc:
                fields[role] = qc[role]
            elif base is None:
                raise UserError(f"quantization_config of unknown scheme {name!r} lacks {role!r}")
        if "group_size" in qc:
            fields["group_size"] = int(qc["group_size"])
        if "activation_scheme" in qc:
            fields["act_quant"] = qc["activation_scheme"] == "dynamic"
        return (
            base.replace(**fields) if base else cls(name=name, **{"dense": None, "experts": None, **fields})
        )


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in (
        Scheme(
            "v4-release",
            "fp8",
            "mxfp4",
            description="DeepSeek's release: FP8 E4M3 128x128 blocks (UE8M0) + MXFP4 routed experts",
        ),
        Scheme(
            "fp8-block", "fp8", "fp8", description="FP8 E4M3, one UE8M0 scale per 128x128 block, everywhere"
        ),
        Scheme("mxfp8", "mxfp8", "mxfp8", description="MXFP8: E4M3, one UE8M0 scale per 32 inputs"),
        Scheme("mxfp4", "mxfp4", "mxfp4", description="MXFP4: E2M1, one UE8M0 scale per 32 inputs"),
        Scheme("hif8", "hif8", "hif8", description="HiFloat8, one UE8M0 scale per 128x128 block"),
        Scheme("int8", "int8", "int8", description="INT8 weight-only, one scale per output channel"),
        Scheme(
            "int4", "int4", "int4", group_size=128, description="INT4 weight-only, one scale per 128 inputs"
        ),
        Scheme(
            "int4-g32", "int4", "int4", group_size=32, description="INT4 weight-only, one scale per 32 inputs"
        ),
    )
}


def get_scheme(scheme: str | Scheme, **changes) -> Scheme:
    """A registered scheme by name (or a Scheme itself), with fields changed, e.g. act_quant=True."""
    if isinstance(scheme, Scheme):
        return scheme.replace(**changes) if changes else scheme
    if scheme not in SCHEMES:
        raise UserError(f"unknown quantisation scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    s = SCHEMES[scheme]
    return s.replace(**changes) if changes else s
