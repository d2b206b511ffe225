"""Token ids -> text for one output stream: incremental detokenization plus stop strings.

The engine speaks token ids; this sits above it, one `TextStream` per choice. The end token and
stop token ids produce no text. Text that might be the start of a stop string is held back, so
a stream never shows part of a stop string that then matches.
"""

from __future__ import annotations

from functools import lru_cache

from ..tokenizer import IncrementalDecoder, Tokenizer


class TextStream:
    def __init__(self, tokenizer: Tokenizer | None, *, hidden: set[int], stop: list[str] | None = None,
                 skip_special_tokens: bool = True):
        self.decoder = IncrementalDecoder(tokenizer, skip_special_tokens=skip_special_tokens) if tokenizer else None
        self.hidden, self.stop = hidden, [s for s in (stop or []) if s]
        self.pending = ""  # decoded, not yet released
        self.stopped = False

    def push(self, token_id: int) -> str:
        """New text released by one token ("" while held back); sets `stopped` on a stop string."""
        if self.stopped or self.decoder is None or token_id in self.hidden:
            return ""
        self.pending += self.decoder.push(token_id)
        return self._release()

    def finish(self) -> str:
        """Everything still held back, at the end of the output."""
        if self.stopped or self.decoder is None:
            return ""
        self.pending += self.decoder.flush()
        out, self.pending = self.pending, ""
        cut = self._first_stop(out)
        if cut is not None:
            out, self.stopped = out[:cut], True
        return out

    def _first_stop(self, text: str) -> int | None:
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        return min(hits) if hits else None

    def _release(self) -> str:
        if not self.stop:
            out, self.pending = self.pending, ""
            return out
        cut = self._first_stop(self.pending)
        if cut is not None:
            out, self.pending, self.stopped = self.pending[:cut], "", True
            return out
        hold = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if s.startswith(self.pending[-n:]):
                    hold = n
                    break
        n = len(self.pending) - hold
        out, self.pending = self.pending[:n], self.pending[n:]
        return out


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
