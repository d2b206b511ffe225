"""A byte-level BPE tokenizer trained on the corpus with HF `tokenizers`, saved as `tokenizer.json`.

Byte-level: text is first mapped to bytes (GPT-2's byte alphabet), so every string encodes and
`decode(encode(s)) == s` exactly. The DeepSeek special tokens come first, so the ids the model
config names (bos 0, eos 1) are theirs, and they are "special" added tokens: matched whole in the
input, never split by BPE, skipped by `decode(..., skip_special_tokens=True)`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..errors import UserError

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
PAD = "<｜▁pad▁｜>"
# DeepSeek-V4's chat and tool-call markers (see encoding/encoding_dsv4.py of the release).
SPECIAL_TOKENS = (
    BOS,
    EOS,
    PAD,
    "<｜User｜>",
    "<｜Assistant｜>",
    "<think>",
    "</think>",
    "<｜DSML｜tool_calls>",
    "</｜DSML｜tool_calls>",
    "｜DSML｜",
)
BOS_ID, EOS_ID = 0, 1


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2):
    """Train byte-level BPE on `texts`; the special tokens take ids 0.. in SPECIAL_TOKENS order.

    The vocabulary is at most `vocab_size` (smaller when the corpus has fewer merges to offer).
    Deterministic for the same texts in the same order.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < len(SPECIAL_TOKENS) + 256:
        raise UserError(
            f"vocab_size {vocab_size} is too small: byte-level BPE needs 256 byte tokens plus "
            f"{len(SPECIAL_TOKENS)} special tokens"
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    check_specials(tok, "the trained tokenizer")
    return tok


def load_tokenizer(path: str | Path):
    """A tokenizer.json file (or the folder holding one)."""
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no tokenizer.json (a trained model folder keeps one beside config.json)"
        )
    return Tokenizer.from_file(str(path))


def check_specials(tok, where: str) -> None:
    for want, name in ((BOS_ID, BOS), (EOS_ID, EOS)):
        got = tok.token_to_id(name)
        if got != want:
            raise UserError(
                f"{where}: {name} has id {got}; expected {want} (the model config's bos/eos ids)"
            )


def encode_documents(tok, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (the packer adds BOS / EOS)."""
    return [e.ids for e in tok.encode_batch(texts, add_special_tokens=False)]
