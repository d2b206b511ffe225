"""Checkpoint name tables: one list of name templates per layout, read in both directions.

Our module names are DeepSeek's, so the official release layout ("deepseek") is the identity on
names. transformers' `DeepseekV4ForCausalLM.save_pretrained` ("hf") writes almost the same names
under `model.`, with a few exceptions listed here. Rules are tried in order; the first whose
pattern matches wins. `{i}` is a layer or MTP index, `{rest}` any dotted suffix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEEPSEEK = "deepseek"
HF = "hf"
LAYOUTS = (DEEPSEEK, HF)


@dataclass(frozen=True)
class Rule:
    ours: str  # template of our state_dict name
    theirs: str  # template of the checkpoint name


# transformers: embed_tokens / hc_head.* / norm under `model.`, head at top level; its KV norm is
# saved as `attn.norm.weight` (its rename table maps `.norm.` <-> `.kv_norm.`). MTP tensors are kept
# under DeepSeek's names; transformers ignores `mtp.*` when loading.
HF_RULES = (
    Rule("embed.weight", "model.embed_tokens.weight"),
    Rule("head.weight", "head.weight"),
    Rule("norm.weight", "model.norm.weight"),
    Rule("hc_head_fn", "model.hc_head.hc_fn"),
    Rule("hc_head_base", "model.hc_head.hc_base"),
    Rule("hc_head_scale", "model.hc_head.hc_scale"),
    Rule("layers.{i}.attn.kv_norm.weight", "model.layers.{i}.attn.norm.weight"),
    Rule("layers.{i}.{rest}", "model.layers.{i}.{rest}"),
    Rule("mtp.{i}.{rest}", "mtp.{i}.{rest}"),
)
# Names transformers also accepts on load (an alias -> the name we use).
HF_ALIASES = (Rule("layers.{i}.attn.kv_norm.weight", "model.layers.{i}.attn.kv_norm.weight"),)

DEEPSEEK_RULES = (Rule("{rest}", "{rest}"),)

RULES = {HF: HF_RULES, DEEPSEEK: DEEPSEEK_RULES}


def _regex(template: str) -> re.Pattern[str]:
    out = re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)").replace(r"\{rest\}", r"(?P<rest>.+)")
    return re.compile(f"^{out}$")


_COMPILED: dict[tuple[str, bool], list[tuple[re.Pattern[str], str]]] = {}


def _table(layout: str, to_ours: bool) -> list[tuple[re.Pattern[str], str]]:
    key = (layout, to_ours)
    if key not in _COMPILED:
        if layout not in RULES:
            raise ValueError(f"unknown checkpoint layout {layout!r}; expected one of {LAYOUTS}")
        rules = RULES[layout] + (HF_ALIASES if layout == HF and to_ours else ())
        _COMPILED[key] = [
            (_regex(r.theirs if to_ours else r.ours), r.ours if to_ours else r.theirs) for r in rules
        ]
    return _COMPILED[key]


def _apply(name: str, table: list[tuple[re.Pattern[str], str]]) -> str | None:
    for pattern, template in table:
        m = pattern.match(name)
        if m:
            return template.format(**m.groupdict())
    return None


def to_checkpoint_name(name: str, layout: str) -> str:
    """Our state_dict name -> the name in a checkpoint of `layout`."""
    out = _apply(name, _table(layout, to_ours=False))
    if out is None:
        raise KeyError(f"no {layout} checkpoint name for parameter {name!r}")
    return out


def from_checkpoint_name(name: str, layout: str) -> str | None:
    """A checkpoint tensor name -> our state_dict name, or None when no rule matches."""
    return _apply(name, _table(layout, to_ours=True))


def detect_layout(names: list[str] | set[str]) -> str:
    """Which layout a set of tensor names follows (transformers' has `model.` prefixes)."""
    if any(n.startswith("model.") for n in names):
        return HF
    return DEEPSEEK


# How the official release stores each tensor (DeepSeek-V4-Pro/-Flash model.safetensors.index.json):
# "fp8" = float8_e4m3fn weight + `.scale` float8_e8m0fnu per 128x128 block; "fp4" = routed-expert
# weight as int8 [out, in/2], two e2m1 codes per byte (element 2j in the low nibble), + `.scale`
# float8_e8m0fnu [out, in/32]; "bf16"; "fp32"; "int64" (the hash tables).
OFFICIAL_STORAGE = (
    (r"\.ffn\.experts\.\d+\.w[123]\.weight$", "fp4"),
    (
        (r"\.attn\.(wq_a|wq_b|wkv|wo_a|wo_b)\.weight$|\.attn\.indexer\.wq_b\.weight$"
        r"|\.ffn\.shared_experts\.w[123]\.weight$|^mtp\.\d+\.[eh]_proj\.weight$"),
        "fp8",
    ),
    (r"\.tid2eid$", "int64"),
    (r"(^|\.)hc_[a-z_]+$|\.attn_sink$|\.ape$|\.gate\.bias$", "fp32"),
    (r".", "bf16"),
)
_STORAGE = [(re.compile(p), kind) for p, kind in OFFICIAL_STORAGE]


def official_storage(name: str) -> str:
    """'fp4', 'fp8', 'bf16', 'fp32' or 'int64': how the release stores our tensor `name`."""
    for pattern, kind in _STORAGE:
        if pattern.search(name):
            return kind
    raise AssertionError("unreachable: the last storage rule matches every name")
