"""A checkpoint's tokenizer.json -> the `tokenizer.*` metadata of a GGUF file.

llama.cpp re-implements tokenizers from this metadata, so only tokenizers it re-implements exactly
are written: byte-level BPE (tokens and merges as HF `tokenizers` stores them) whose pre-tokenizer
is one llama.cpp knows by name:

* "gpt-2": `ByteLevel(use_regex=True)`, what `trillion train` builds (trillion.train.tokenizer);
* "deepseek-v3": DeepSeek-V3/V4's three `Split` regexes followed by `ByteLevel(use_regex=False)`.

Anything else is refused with the reason. A model without a tokenizer (a flavor's random init, or
`tokenizer=False`) gets `tokenizer.ggml.model = "none"`: llama.cpp then runs on token ids only.

Token types: special added tokens are CONTROL, other added tokens USER_DEFINED, ids the tokenizer
does not fill (the config's vocab_size can be larger) UNUSED placeholders, the rest NORMAL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..chat.template import CHAT_TEMPLATE
from ..config import ModelConfig
from ..errors import UserError

NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5  # llama.cpp's llama_token_type

# DeepSeek-V3's pre-tokenizer regexes, as tokenizer.json stores them (and as llama.cpp's
# LLAMA_VOCAB_PRE_TYPE_DEEPSEEK3_LLM splits): numbers of up to 3 digits, CJK runs, then words,
# punctuation and whitespace.
DEEPSEEK_V3_SPLITS = (
    "\\p{N}{1,3}",
    "[一-龥぀-ゟ゠-ヿ]+",
    (
        "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
        " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"
    ),
)

@dataclass
class Vocab:
    """The tokenizer metadata of one GGUF file (model "none": ids only, no tokens)."""

    model: str
    pre: str = ""
    tokens: list[str] = field(default_factory=list)
    token_types: list[int] = field(default_factory=list)
    merges: list[str] = field(default_factory=list)
    special_ids: dict[str, int] = field(default_factory=dict)  # bos, eos, pad
    chat_template: str = ""


def no_vocab() -> Vocab:
    return Vocab(model="none")


def pre_tokenizer_name(pre: dict | None, path: str = "tokenizer.json") -> str:
    """llama.cpp's name for a tokenizer.json `pre_tokenizer`, or ValueError saying why none fits."""
    if pre and pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        if pre.get("add_prefix_space"):
            raise UserError(
                f"{path}: ByteLevel pre-tokenizer with add_prefix_space; llama.cpp's gpt-2 adds none"
            )
        return "gpt-2"
    if pre and pre.get("type") == "Sequence":
        steps = pre.get("pretokenizers", [])
        splits = tuple(
            _canon(s.get("pattern", {}).get("Regex")) for s in steps[:-1] if s.get("type") == "Split"
        )
        last = steps[-1] if steps else {}
        if (
            splits == tuple(map(_canon, DEEPSEEK_V3_SPLITS))
            and last.get("type") == "ByteLevel"
            and not last.get("use_regex", True)
        ):
            return "deepseek-v3"
    raise UserError(
        f"{path}: pre_tokenizer {json.dumps(pre)[:120]} is not one llama.cpp re-implements (gpt-2's "
        f"ByteLevel or DeepSeek-V3's splits); llama.cpp would split text differently. Export without the "
        f"tokenizer to run on token ids"
    )


def _canon(regex: str | None) -> str | None:
    """A regex with its escaped line breaks written as the characters (the same pattern)."""
    return regex.replace("\\r", "\r").replace("\\n", "\n") if regex else regex


def read_vocab(path: str | Path, cfg: ModelConfig) -> Vocab:
    """tokenizer.json (or a folder holding one) -> Vocab for a model of config `cfg`."""
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise UserError(
            f"{path}: tokenizer model {model.get('type')!r}; llama.cpp export supports byte-level BPE"
        )
    if (data.get("decoder") or {}).get("type") != "ByteLevel":
        raise UserError(f"{path}: decoder {data.get('decoder')!r}; expected ByteLevel (byte-level BPE)")
    if data.get("normalizer"):
        raise UserError(
            f"{path}: has a normalizer ({data['normalizer'].get('type')}); llama.cpp's BPE applies none"
        )
    pre = pre_tokenizer_name(data.get("pre_tokenizer"), str(path))

    by_id: dict[int, tuple[str, int]] = {i: (tok, NORMAL) for tok, i in model["vocab"].items()}
    for t in data.get("added_tokens", []):
        by_id[int(t["id"])] = (t["content"], CONTROL if t.get("special") else USER_DEFINED)
    n = max(by_id) + 1
    if n > cfg.vocab_size:
        raise UserError(f"{path}: {n} tokens, more than the model's vocab_size = {cfg.vocab_size}")
    tokens, types = [], []
    for i in range(cfg.vocab_size):
        tok, kind = by_id.get(i, (f"[PAD{i}]", UNUSED))
        tokens.append(tok)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]

    special = {"bos": cfg.bos_token_id, "eos": cfg.eos_token_id}
    pad = next((i for i, (tok, kind) in by_id.items() if kind == CONTROL and "pad" in tok.lower()), None)
    if pad is not None:
        special["pad"] = pad
    return Vocab("gpt2", pre, tokens, types, merges, special, _chat_template(path.parent))


def _chat_template(folder: Path) -> str:
    """The folder's own chat template (tokenizer_config.json) if it has one, else ours."""
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(template, str) and template:
            return template
    return CHAT_TEMPLATE


def vocab_metadata(v: Vocab) -> dict[str, object]:
    """The tokenizer.* keys."""
    kv: dict[str, object] = {"tokenizer.ggml.model": v.model}
    if v.model == "none":
        return kv
    kv.update(
        {
            "tokenizer.ggml.pre": v.pre,
            "tokenizer.ggml.tokens": v.tokens,
            "tokenizer.ggml.token_type": v.token_types,
            "tokenizer.ggml.merges": v.merges,
            "tokenizer.ggml.add_bos_token": False,  # the chat template writes BOS, as trillion's encoder does
            "tokenizer.ggml.add_eos_token": False,
        }
    )
    for key, i in v.special_ids.items():
        kv[f"tokenizer.ggml.{key}_token_id"] = i
    if v.chat_template:
        kv["tokenizer.chat_template"] = v.chat_template
    return kv
