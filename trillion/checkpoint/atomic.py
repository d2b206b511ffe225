"""Write a checkpoint folder all at once or not at all, and never delete what we did not write.

A checkpoint is a set of entries (`is_checkpoint_entry`): the weights (model.safetensors, or shards
and their index), config.json, generation_config.json, the tokenizer files and the release's
`encoding/` folder. Writing one to a folder that exists:

  empty                                 filled;
  only checkpoint entries and files     the checkpoint is replaced (a checkpoint we wrote; the files
  trillion writes beside them           beside it are kept);
  anything else                         refused, unless overwrite=True (`--overwrite`): then the
                                        checkpoint entries are replaced and every other entry is kept.

The new files are written into a temporary sibling folder and fsynced; the entries to keep are
hard-linked into it (copied where the filesystem cannot link; never moved), then the old folder is
moved aside, the new one renamed into place, and the old one deleted. A save interrupted at any point
leaves the previous folder whole (at worst under its `.NAME.old-*` name if the process dies between
the two renames), and the files it kept are the same files, not copies, whenever links work.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CheckpointError, listing

# The entries of a checkpoint folder: replaced as a set when a checkpoint is written over another.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
SHARD_FILE = re.compile(r"^model-\d{5}-of-\d{5}\.safetensors$")
SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json")
SIDE_FOLDERS = ("encoding",)  # the release's chat-format code (encoding/encoding_dsv4.py)
CHECKPOINT_FILES = ("config.json", *WEIGHT_FILES, *SIDE_FILES)
# Files trillion writes beside a checkpoint (train / export: training.json; training checkpoints:
# trainer_state.*). A folder of these and checkpoint entries is one we wrote; they are kept.
OUR_OTHER_FILES = ("training.json", "trainer_state.json", "trainer_state.safetensors")


def is_checkpoint_entry(name: str) -> bool:
    """Is `name` (an entry of a folder) part of a checkpoint, i.e. replaced when one is written?"""
    return name in CHECKPOINT_FILES or name in SIDE_FOLDERS or bool(SHARD_FILE.match(name))


def check_destination(path: str | Path, *, overwrite: bool = False) -> None:
    """Raise CheckpointError if writing a checkpoint to `path` would need overwrite=True (see above).

    Commands call this before their slow work (loading, quantising), so a refusal comes first.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path}: exists and is not a folder; refusing to replace it with a checkpoint")
    if overwrite or not path.is_dir():
        return
    foreign = sorted(
        e.name + ("/" if e.is_dir() else "")
        for e in path.iterdir()
        if not is_checkpoint_entry(e.name) and e.name not in OUR_OTHER_FILES
    )
    if foreign:
        raise CheckpointError(
            f"{path}: not empty and not a checkpoint folder (holds {listing(foreign, 5)}); refusing to write "
            "a model there. Choose another folder, or pass --overwrite (overwrite=True) to replace only a "
            "checkpoint's files there and keep everything else"
        )


@contextmanager
def atomic_folder(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder; on a clean exit its files become `path`'s checkpoint (see above)
    and the entries of `path` that are not part of a checkpoint are kept; on an error it is removed."""
    path = Path(path)
    check_destination(path, overwrite=overwrite)
    path = path.resolve()  # a link to a folder: write the folder it names, keep the link
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.parent / f".{path.name}.tmp-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.is_dir() and any(path.iterdir()):
            for entry in path.iterdir():
                if not is_checkpoint_entry(entry.name) and not os.path.lexists(tmp / entry.name):
                    _link_entry(entry, tmp / entry.name)  # kept; what the caller wrote anew wins
            shutil.copymode(path, tmp)
            old = path.parent / f".{path.name}.old-{tag}"
            os.rename(path, old)
            try:
                os.rename(tmp, path)
            except BaseException:
                os.rename(old, path)
                raise
            _fsync_dir(path.parent)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)  # replaces an empty folder too
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)  # holds only new files and links to kept ones


def _link_entry(src: Path, dst: Path) -> None:
    """Give `dst` the content of `src` without touching `src`: hard links, else copies."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        shutil.copytree(src, dst, symlinks=True, copy_function=_link_or_copy)
    else:
        _link_or_copy(src, dst)


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links, or a file we may not link (protected_hardlinks)
        shutil.copy2(src, dst)


def normal_file_mode(folder: Path) -> int:
    """The permission bits a new file in `folder` gets (0o666 less the umask, or as the folder's
    default ACL says), found by making one: reading the umask would briefly change it for every thread."""
    probe = Path(folder) / f".mode-probe-{uuid.uuid4().hex[:8]}"
    fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        return os.fstat(fd).st_mode & 0o777
    finally:
        os.close(fd)
        probe.unlink()


def _fsync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems cannot open folders; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
