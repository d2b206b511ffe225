"""What other tools read beside the weights: tokenizer_config.json, special_tokens_map.json and
generation_config.json, written into every model folder trillion writes that lacks them.

transformers' `AutoTokenizer` (which vLLM and lm-eval load through) takes BOS / EOS, whether to add
BOS, the context length and the chat template from tokenizer_config.json; with tokenizer.json alone
it finds no BOS (`bos_token_id None`) and no template. `GenerationConfig` (transformers' generate,
vLLM's default sampling parameters) reads generation_config.json. DeepSeek's release folders ship
both; so do ours:

  tokenizer_config.json   tokenizer_class PreTrainedTokenizerFast; bos / eos from the model config's
                          ids, pad `<｜▁pad▁｜>` (else eos), no unk (byte-level BPE never needs one);
                          add_bos_token true, add_eos_token false (the model was trained on
                          `BOS text EOS`); model_max_length = max_position_embeddings; the V4 chat
                          template (trillion.chat.template)
                          (and tokenizer.json's post-processor made to agree: add_bos_on_encode)
  special_tokens_map.json the same special tokens, for older transformers
  generation_config.json  bos / eos ids, sampling defaults (those of `trillion generate`) and a
                          default cap on new tokens (DEFAULT_MAX_NEW_TOKENS, at most the context)

`trillion.tokenizer.Tokenizer` follows add_bos_token as transformers and vLLM do.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from ..chat.template import CHAT_TEMPLATE

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
GENERATION_CONFIG = "generation_config.json"
PAD = "<｜▁pad▁｜>"  # DeepSeek's padding token (id 2 in its vocabulary and in ours)
DEFAULT_MAX_NEW_TOKENS = 4096  # DeepSeek's API default for max_tokens
DEFAULT_TEMPERATURE, DEFAULT_TOP_P = 0.8, 0.95  # `trillion generate`'s defaults


def generation_config(config: dict) -> dict:
    """generation_config.json for a model whose config.json is `config`."""
    context = int(config.get("max_position_embeddings") or DEFAULT_MAX_NEW_TOKENS)
    return {
        "bos_token_id": config.get("bos_token_id"),
        "eos_token_id": config.get("eos_token_id"),
        "do_sample": True,
        "temperature": DEFAULT_TEMPERATURE,
        "top_p": DEFAULT_TOP_P,
        "max_new_tokens": min(DEFAULT_MAX_NEW_TOKENS, context),
    }


def add_bos_on_encode(tokenizer_file: Path, bos: str) -> None:
    """Make `tokenizer_file` add `bos` in front of a text encoded with special tokens, if it does not.

    transformers (5.x, and 4.x for PreTrainedTokenizerFast) and hence vLLM and lm-eval decide that by
    tokenizer.json's post-processor, not by add_bos_token, once a tokenizer.json exists. Only the
    post-processor changes: ids without special tokens (what training used) stay the same.
    """
    from tokenizers import Tokenizer, processors

    tok = Tokenizer.from_file(str(tokenizer_file))
    bos_id = tok.token_to_id(bos)
    if tok.encode("a", add_special_tokens=True).ids[:1] == [bos_id]:
        return
    template = processors.TemplateProcessing(
        single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)]
    )
    tok.post_processor = (
        template if tok.post_processor is None else processors.Sequence([tok.post_processor, template])
    )
    tok.save(str(tokenizer_file))


def special_tokens(tokenizer_file: Path, config: dict) -> dict:
    """{"bos_token", "eos_token", "pad_token"}: the tokens of the config's ids in `tokenizer_file`."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_file))
    out = {}
    for key in ("bos", "eos"):
        i = config.get(f"{key}_token_id")
        token = tok.id_to_token(int(i)) if isinstance(i, int) else None
        if token is None:
            raise ValueError(f"{tokenizer_file}: the model config's {key}_token_id {i!r} is not one of its tokens")
        out[f"{key}_token"] = token
    out["pad_token"] = PAD if tok.token_to_id(PAD) is not None else out["eos_token"]
    return out


def tokenizer_config(specials: dict, config: dict) -> dict:
    """tokenizer_config.json for `specials` (from special_tokens) and the model's config.json."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(config.get("max_position_embeddings") or DEFAULT_MAX_NEW_TOKENS),
        "chat_template": CHAT_TEMPLATE,
    }


def write_side_files(folder: Path, config: dict, *, final: Path | None = None) -> None:
    """Write those of the three files `folder` lacks (the tokenizer's two only beside a tokenizer.json).

    final: the folder's name in messages (where a temporary `folder` will end up).
    A tokenizer.json that cannot be read, or lacks the config's BOS / EOS, gets a warning and no
    tokenizer_config.json: the weights are still written (`trillion inspect` reports the tokenizer).
    """
    folder = Path(folder)
    if not (folder / GENERATION_CONFIG).exists():
        _write_json(folder / GENERATION_CONFIG, generation_config(config))
    tokenizer = folder / TOKENIZER_JSON
    if not tokenizer.is_file() or (folder / TOKENIZER_CONFIG).exists():
        return
    try:
        specials = special_tokens(tokenizer, config)
        add_bos_on_encode(tokenizer, specials["bos_token"])
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception for a file it cannot parse
        where = Path(final or folder) / TOKENIZER_JSON
        warnings.warn(f"{where}: {e}; no {TOKENIZER_CONFIG} written beside it", stacklevel=2)
        return
    _write_json(folder / TOKENIZER_CONFIG, tokenizer_config(specials, config))
    if not (folder / SPECIAL_TOKENS_MAP).exists():
        _write_json(folder / SPECIAL_TOKENS_MAP, specials)


def _write_json(file: Path, doc: dict) -> None:
    file.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
