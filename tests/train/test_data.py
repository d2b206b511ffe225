"""Corpus discovery and split, the tokenizer, packing and the data cursor."""

import torch

from trillion.train.corpus import Document, load_corpus, split, stdlib_root
from trillion.train.data import Batches, Cursor, pack, sequences
from trillion.train.tokenizer import BOS, BOS_ID, EOS, EOS_ID, SPECIAL_TOKENS, train_tokenizer


def test_stdlib_corpus_is_the_standard_library_without_site_packages():
    docs = load_corpus(["stdlib"], max_docs=40)
    assert len(docs) == 40
    assert all(d.name.startswith("stdlib/") and d.name.endswith(".py") for d in docs)
    assert [d.name for d in docs] == sorted(d.name for d in docs)
    assert (stdlib_root() / "json" / "decoder.py").is_file()
    assert not any("site-packages" in d.name for d in load_corpus(["stdlib"]))


def test_folder_corpus_skips_binary_and_split_is_by_name(tmp_path):
    for i in range(20):
        (tmp_path / f"f{i:02d}.txt").write_text(f"text {i}\n")
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01binary")
    docs = load_corpus([str(tmp_path)])
    assert len(docs) == 20
    train, held = split(docs, 0.25)
    assert train and held and len(train) + len(held) == 20
    # The split of a document depends on its name only: removing others does not move it.
    train2, held2 = split([d for d in docs if d in held or d == train[0]], 0.25)
    assert {d.name for d in held2} <= {d.name for d in held} and train[0] in train2


def test_tokenizer_round_trip_and_special_tokens(corpus):
    texts = [p.read_text() for p in sorted(corpus.iterdir())]
    tok = train_tokenizer(texts, 320)
    assert tok.get_vocab_size() <= 320
    assert tok.token_to_id(BOS) == BOS_ID == 0 and tok.token_to_id(EOS) == EOS_ID == 1
    for s in SPECIAL_TOKENS:
        assert tok.encode(s, add_special_tokens=False).ids == [tok.token_to_id(s)]
    sample = "def f(x):\n\treturn x  # ünïcødé ✓ 🙂\n<｜User｜>hi</think>"
    ids = tok.encode(sample, add_special_tokens=False).ids
    assert tok.decode(ids, skip_special_tokens=False) == sample
    assert train_tokenizer(texts, 320).to_str() == tok.to_str()  # deterministic


def test_pack_and_sequences():
    stream = pack([[5, 6, 7], [8]])
    assert stream.tolist() == [BOS_ID, 5, 6, 7, EOS_ID, BOS_ID, 8, EOS_ID]
    seqs = sequences(torch.arange(11, dtype=torch.int32), 3)
    assert seqs.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]


def test_cursor_restores_the_batches_that_follow():
    seqs = torch.arange(50 * 5).view(50, 5)
    a = Batches(seqs, 8, seed=3)
    first = [a.next() for _ in range(9)]  # crosses an epoch (6 batches per epoch)
    assert a.cursor.epoch == 1
    b = Batches(seqs, 8, seed=3)
    for _ in range(4):
        b.next()
    c = Batches(seqs, 8, seed=3, cursor=Cursor.from_dict(b.cursor.to_dict()))
    for want in first[4:]:
        assert torch.equal(c.next(), want)
    # Each epoch is a permutation: no sequence twice within one.
    rows = torch.cat(first[:6])[:, 0] // 5
    assert rows.unique().numel() == 48


def test_documents_are_plain_data():
    assert Document("a", "b") == Document("a", "b")
