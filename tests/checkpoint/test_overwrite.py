"""Writing a checkpoint never deletes what we did not write, and files follow the umask.

A non-empty folder that is not a checkpoint is refused unless overwrite=True (`--overwrite`); with
it, only a checkpoint's files are replaced and everything else stays, byte for byte and as the same
files. A checkpoint's own folder (convert onto itself) keeps its training.json.
"""

import json
import os
import stat

import pytest
import torch

from trillion.checkpoint import CheckpointError, load_model, save_model
from trillion.cli.main import main

TOKENS = torch.randint(0, 512, (1, 20), generator=torch.Generator().manual_seed(1))  # tiny: vocab 512


def same_weights(a, b) -> bool:
    """The weights round-trip exactly (logits of memory-mapped weights may take other kernel paths)."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def precious_folder(path):
    """A folder of a user's own files: a text file, a subfolder, a link."""
    path.mkdir()
    (path / "thesis.txt").write_text("years of work")
    (path / "notes").mkdir()
    (path / "notes" / "draft.md").write_text("more work")
    (path / "latest").symlink_to("thesis.txt")
    return {
        "thesis.txt": (path / "thesis.txt").stat().st_ino,
        "notes/draft.md": (path / "notes" / "draft.md").stat().st_ino,
    }


def assert_untouched(path, inodes):
    assert (path / "thesis.txt").read_text() == "years of work"
    assert (path / "notes" / "draft.md").read_text() == "more work"
    assert os.readlink(path / "latest") == "thesis.txt"
    # the very same files (hard links), not copies
    assert {n: (path / n).stat().st_ino for n in inodes} == inodes


def test_convert_refuses_a_folder_of_other_files(tmp_path, capsys):
    dst = tmp_path / "precious"
    inodes = precious_folder(dst)
    assert main(["convert", "tiny", str(dst), "--to", "hf"]) == 1
    err = capsys.readouterr().err
    assert "precious: not empty and not a checkpoint folder" in err and "--overwrite" in err
    assert "thesis.txt" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in dst.iterdir()) == ["latest", "notes", "thesis.txt"]
    assert_untouched(dst, inodes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # no temporary folder left


def test_convert_with_overwrite_keeps_other_files(tmp_path):
    dst = tmp_path / "precious"
    inodes = precious_folder(dst)
    assert main(["convert", "tiny", str(dst), "--to", "hf", "--overwrite", "--seed", "2"]) == 0
    assert_untouched(dst, inodes)
    assert {"config.json", "model.safetensors"} <= {p.name for p in dst.iterdir()}
    assert same_weights(load_model(dst), load_model("tiny", seed=2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]


def test_quantize_refuses_then_keeps_other_files(tmp_path, capsys):
    dst = tmp_path / "precious2"
    inodes = precious_folder(dst)
    args = ["quantize", "--model", "tiny", "--out", str(dst), "--scheme", "int8", "--prompt-len", "8"]
    assert main(args) == 1
    assert "not empty and not a checkpoint folder" in capsys.readouterr().err
    assert_untouched(dst, inodes)
    assert main([*args, "--overwrite"]) == 0
    assert_untouched(dst, inodes)
    assert load_model(dst).quant_scheme.name == "int8"


def test_overwrite_replaces_the_old_checkpoint_files_only(tmp_path):
    """A sharded checkpoint overwritten by a single-file one: no stale shard or index remains."""
    model = load_model("tiny", seed=3)
    dst = tmp_path / "m"
    save_model(model, dst, max_shard_bytes=200_000)
    assert (dst / "model.safetensors.index.json").is_file()
    (dst / "README.md").write_text("my model card")
    with pytest.raises(CheckpointError, match="README.md"):
        save_model(model, dst)
    save_model(model, dst, overwrite=True)
    names = sorted(p.name for p in dst.iterdir())
    assert names == ["README.md", "config.json", "generation_config.json", "model.safetensors"]
    assert (dst / "README.md").read_text() == "my model card"


def test_a_checkpoint_we_wrote_is_replaced_without_overwrite(tmp_path):
    model = load_model("tiny", seed=3)
    dst = save_model(model, tmp_path / "m")
    (dst / "training.json").write_text('{"steps": 5}')  # what train / export write beside a checkpoint
    save_model(load_model("tiny", seed=4), dst)
    assert (dst / "training.json").read_text() == '{"steps": 5}'
    assert same_weights(load_model(dst), load_model("tiny", seed=4))


@pytest.mark.filterwarnings("ignore:.*tokenizer.json")  # the placeholder tokenizer is carried, not read
@torch.no_grad()
def test_convert_onto_itself_keeps_side_files(tmp_path):
    src = tmp_path / "run-model"
    assert main(["convert", "tiny", str(src), "--to", "hf", "--seed", "5"]) == 0
    (src / "training.json").write_text('{"eval": {"eval_loss": 1.5}}')
    tokenizer = json.dumps({"model": "dummy"})
    (src / "tokenizer.json").write_text(tokenizer)
    want = load_model(src)(TOKENS)

    assert main(["convert", str(src), str(src), "--to", "hf", "--dtype", "bfloat16"]) == 0
    assert (src / "training.json").read_text() == '{"eval": {"eval_loss": 1.5}}'
    assert (src / "tokenizer.json").read_text() == tokenizer
    assert json.loads((src / "config.json").read_text())["dtype"] == "bfloat16"
    got = load_model(src)(TOKENS)
    assert (got - want).abs().max() < 0.1 * want.abs().max()  # bf16 rounding of the weights only

    (src / "thesis.txt").write_text("mine")  # a file that is not ours: now it takes --overwrite
    assert main(["convert", str(src), str(src), "--to", "deepseek"]) == 1
    assert main(["convert", str(src), str(src), "--to", "deepseek", "--overwrite"]) == 0
    assert (src / "thesis.txt").read_text() == "mine"
    assert (src / "training.json").read_text() == '{"eval": {"eval_loss": 1.5}}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run-model"]


def test_a_link_to_a_folder_is_written_through(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("k")
    link = tmp_path / "link"
    link.symlink_to(real)
    save_model(load_model("tiny"), link, overwrite=True)
    assert link.is_symlink() and (real / "model.safetensors").is_file() and (real / "keep.txt").read_text() == "k"


@pytest.mark.parametrize("umask, want", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, umask, want):
    old = os.umask(umask)
    try:
        dst = save_model(load_model("tiny"), tmp_path / "m", max_shard_bytes=200_000)
    finally:
        os.umask(old)
    files = sorted(p for p in dst.iterdir())
    assert any(p.suffix == ".safetensors" for p in files) and any(p.name == "config.json" for p in files)
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {p.name: oct(want) for p in files}
