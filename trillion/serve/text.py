"""The bytes behind a token, for OpenAI's `logprobs.bytes` (the text of an output comes from
`trillion.tokenizer.TextStream`, shared with the Python API)."""

from __future__ import annotations

from functools import lru_cache

from ..tokenizer import Tokenizer


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE's printable stand-ins for the 256 byte values, reversed."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def token_bytes(tokenizer: Tokenizer, token_id: int) -> bytes:
    """The bytes one token stands for (byte-level BPE tokens may hold part of a UTF-8 character)."""
    piece = tokenizer.id_to_token(token_id)
    if piece is None:
        return b""
    table = _byte_decoder()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return piece.encode()
