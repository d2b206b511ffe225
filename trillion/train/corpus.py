"""Training text: which documents, in which order, and which are held out.

A corpus is a list of documents (name, text) sorted by name, so the same sources give the same
order on every machine. Sources:

* ``stdlib``: the ``*.py`` files of the running Python's standard library (``sysconfig``'s
  ``stdlib`` path, without ``site-packages``): every machine with Python has it, which makes it our
  embedded default corpus. Its content depends on the Python version (see docs/training.md).
* a file: one document;
* a folder: every file below it that reads as UTF-8 text (binary files, with a NUL byte, are skipped).

The held-out split is by document and depends only on the document's name (a hash), so adding or
removing other files never moves a document between the splits.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

STDLIB = "stdlib"
SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", ".git"})


@dataclass(frozen=True)
class Document:
    name: str  # stable identity: "stdlib/json/decoder.py", or the path as given for user files
    text: str


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def load_corpus(sources: tuple[str, ...] | list[str], max_docs: int | None = None) -> list[Document]:
    """All documents of `sources` (see the module docstring), sorted by name, duplicates dropped."""
    docs: dict[str, Document] = {}
    for source in sources:
        for doc in _documents(str(source)):
            docs.setdefault(doc.name, doc)
    out = [docs[k] for k in sorted(docs)]
    if not out:
        raise FileNotFoundError(f"no text documents found in {list(sources)}")
    return out[:max_docs] if max_docs else out


def _documents(source: str):
    if source == STDLIB:
        root = stdlib_root()
        for path in _walk(root, suffix=".py"):
            text = _read_text(path)
            if text is not None:
                yield Document(f"stdlib/{path.relative_to(root).as_posix()}", text)
        return
    path = Path(source)
    if path.is_file():
        text = _read_text(path)
        if text is None:
            raise UserError(f"{path}: not UTF-8 text; training data must be text files")
        yield Document(path.as_posix(), text)
    elif path.is_dir():
        for p in _walk(path):
            text = _read_text(p)
            if text is not None:
                yield Document(p.as_posix(), text)
    else:
        raise FileNotFoundError(f"{source}: no such file or folder (and not '{STDLIB}')")


def _walk(root: Path, suffix: str | None = None):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            if suffix is None or name.endswith(suffix):
                yield Path(dirpath) / name


def _read_text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def heldout_score(name: str) -> float:
    """A number in [0, 1) fixed by the document's name alone."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2.0**64


def split(docs: list[Document], heldout: float) -> tuple[list[Document], list[Document]]:
    """(train, held-out) by name hash; both keep name order and neither is empty (given >= 2 docs)."""
    if len(docs) < 2:
        raise UserError(f"need at least 2 documents to hold one out for evaluation; found {len(docs)}")
    scores = [heldout_score(d.name) for d in docs]
    held = {i for i, s in enumerate(scores) if s < heldout}
    if not held:  # tiny corpora: hold out the document with the lowest score
        held = {min(range(len(docs)), key=scores.__getitem__)}
    if len(held) == len(docs):
        held.discard(max(held, key=scores.__getitem__))
    train = [d for i, d in enumerate(docs) if i not in held]
    return train, [d for i, d in enumerate(docs) if i in held]
