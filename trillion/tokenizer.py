"""Text <-> token ids with a checkpoint's `tokenizer.json` (HF `tokenizers`), and streaming decode.

`Tokenizer.encode_prompt` is how a plain-text prompt becomes ids everywhere (LLM, `trillion generate`,
`/v1/completions`): BOS first, as the folder's tokenizer_config.json says (`add_bos_token`).

The engine speaks token ids; this sits above it, used by `LLM` and the server alike.
`IncrementalDecoder` turns a growing list of ids into text deltas without ever splitting a
multi-byte character: a byte-level BPE token can end in the middle of a UTF-8 sequence, which
decodes to U+FFFD until the next token completes it, so a trailing replacement character is held
back until it resolves. `TextStream` is one output's text: the decoder plus stop strings.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from .errors import UserError

REPLACEMENT = "\ufffd"


class Tokenizer:
    """A tokenizer.json, and whether a text prompt starts with BOS (`encode_prompt`).

    The BOS rule is the model folder's own, as transformers and vLLM read it: tokenizer_config.json's
    `add_bos_token` and `bos_token` (without `add_bos_token`: whether tokenizer.json's post-processor
    adds BOS). A folder without tokenizer_config.json falls back to the model config's
    `bos_token_id` (its config.json, else the id the caller passes) and adds it: V4 models are
    trained on `BOS text EOS`.
    """

    def __init__(
        self, tok: HFTokenizer, path: str | None = None, *, bos_token_id: int | None = None,
        add_bos_token: bool | None = None,
    ):
        self.tok, self.path = tok, path
        # None: not configured; encode_prompt then adds the caller's model BOS
        self.bos_token_id, self.add_bos_token = bos_token_id, add_bos_token

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """A tokenizer.json, or the folder holding one (whose tokenizer_config.json / config.json
        give the BOS rule)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.exists():
            raise FileNotFoundError(f"no tokenizer at {path}")
        try:
            tok = HFTokenizer.from_file(str(path))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception ("EOF while parsing ...")
            raise TokenizerError(f"{path}: not a readable tokenizer.json ({e})") from None
        bos, add = _bos_rule(path.parent, tok)
        return cls(tok, str(path), bos_token_id=bos, add_bos_token=add)

    @classmethod
    def find(cls, folder: str | Path) -> Tokenizer | None:
        p = Path(folder) / "tokenizer.json"
        return cls.from_file(p) if p.exists() else None

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self.tok.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_prompt(self, text: str, *, bos_token_id: int | None = None) -> list[int]:
        """The ids of a plain-text prompt: BOS first when the folder says so (see the class) and the
        text does not already start with it. bos_token_id: the model config's, for a tokenizer whose
        folder configures no BOS (a bare tokenizer.json). Chat prompts carry BOS in their text."""
        ids = self.encode(text)
        add = self.add_bos_token if self.add_bos_token is not None else True
        bos = self.bos_token_id if self.bos_token_id is not None else bos_token_id
        if add and bos is not None and ids[:1] != [bos]:
            ids = [bos, *ids]
        return ids

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_id(self, token: str) -> int | None:
        return self.tok.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        return self.tok.id_to_token(i)


class TokenizerError(UserError):
    """A tokenizer file that cannot be read; the message names it."""


def _bos_rule(folder: Path, tok: HFTokenizer) -> tuple[int | None, bool | None]:
    """(bos id, add it?) from the folder's tokenizer_config.json, else its config.json, else unknown."""
    tc = _read_json(folder / "tokenizer_config.json")
    if tc is not None:
        bos = tc.get("bos_token")
        if isinstance(bos, dict):  # transformers' AddedToken form
            bos = bos.get("content")
        bos_id = tok.token_to_id(bos) if isinstance(bos, str) else None
        if isinstance(bos, str) and bos_id is None:
            raise TokenizerError(f"{folder / 'tokenizer_config.json'}: bos_token {bos!r} is not a token of tokenizer.json")
        if "add_bos_token" in tc:  # without a bos_token: the model's BOS (encode_prompt's argument)
            return bos_id, bool(tc["add_bos_token"])
        first = tok.encode("", add_special_tokens=True).ids[:1]  # what the post-processor puts first
        return bos_id, bos_id is not None and first == [bos_id]
    config = _read_json(folder / "config.json")
    bos_id = config.get("bos_token_id") if config is not None else None
    if isinstance(bos_id, list):
        bos_id = bos_id[0] if bos_id else None
    return (int(bos_id), True) if isinstance(bos_id, int) else (None, None)


def _read_json(file: Path) -> dict | None:
    if not file.is_file():
        return None
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(doc, dict):
        raise TokenizerError(f"{file}: expected a JSON object, got {type(doc).__name__}")
    return doc


class IncrementalDecoder:
    """Feed ids one at a time; get back only complete new text.

    Decodes a short window (the previous emitted token(s) plus the new ones) rather than the whole
    sequence, so streaming costs O(1) per token; the window's prefix keeps byte-level merges and
    leading spaces right."""

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = True):
        self.tok, self.skip = tokenizer, skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # start of the decode window
        self.read = 0  # ids before this are already emitted

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=self.skip)
        now = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=self.skip)
        if len(now) <= len(before) or now.endswith(REPLACEMENT):
            return ""  # nothing new yet, or an incomplete UTF-8 sequence: wait for the next token
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before) :]

    def flush(self) -> str:
        """Whatever is still held back (e.g. a dangling partial character) at the end."""
        before = self.tok.decode(self.ids[self.prefix : self.read], skip_special_tokens=self.skip)
        now = self.tok.decode(self.ids[self.prefix :], skip_special_tokens=self.skip)
        self.prefix = self.read = len(self.ids)
        return now[len(before) :] if len(now) > len(before) else ""

    @property
    def text(self) -> str:
        return self.tok.decode(self.ids, skip_special_tokens=self.skip)


class TextStream:
    """Token ids -> text for one output: incremental decoding plus stop strings.

    The end token and `hidden` ids (stop token ids) produce no text. Text that might be the start
    of a stop string is held back (only as much as matches a stop string's beginning), so a stream
    never shows part of a stop string that then matches; a match cuts the text before it and sets
    `stopped`."""

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
