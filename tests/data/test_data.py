"""Real corpora, deterministic splits, packing, the resumable stream and the MindRecord round trip."""
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.config import load_config
from locmoe_ms.data.corpus import documents, split_of
from locmoe_ms.data.dataset import BatchStream, pack
from locmoe_ms.data.tokenizer import build_tokenizer
from locmoe_ms.data.vocabulary import TrimmedVocabulary, byte_share
from locmoe_ms.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]


def test_wiki_corpus_and_split_are_real_and_stable():
    docs = list(documents("wiki_en"))
    assert len(docs) > 9000
    splits = Counter(split_of(d.title, 0.05, 0.05) for d in docs)
    assert splits["train"] > 8500 and 400 < splits["valid"] < 600 and 400 < splits["test"] < 600


def test_peoples_daily_loads_without_tags():
    docs = list(documents("peoples_daily"))
    assert len(docs) > 10000 and docs[0].domain == 1
    assert not any(re.search(r"/[a-zA-Z]", d.text) for d in docs[:2000])
    assert "新世纪" in docs[0].text


def test_gpt2_tokenizer_round_trips():
    tok = build_tokenizer("gpt2")
    assert tok.vocab_size == 50257 and tok.encode("Hello world") == [15496, 995]
    assert tok.decode(tok.encode("LocMoE on MindSpore.")) == "LocMoE on MindSpore."


def test_trimmed_vocabulary_keeps_frequent_tokens_and_spells_the_rest_as_bytes():
    gpt2 = build_tokenizer("gpt2")
    train = [gpt2.encode(d.text) for d in list(documents("wiki_en"))[:300]]
    vocabulary = TrimmedVocabulary(gpt2, 1000)
    vocabulary.fit(train)
    counts = Counter(i for t in train for i in t)
    most_common = counts.most_common(1)[0][0]
    text = "The Zyzzyva quarterback (Ångström) played."
    ids = vocabulary.remap([gpt2.encode(text)])[0]
    assert vocabulary.decode(ids) == text                      # lossless, rare pieces spelled as UTF-8 bytes
    assert max(ids) < 1000 and any(i < 256 for i in ids) and any(i >= 257 for i in ids)
    assert vocabulary.remap([[most_common]]) == [[257]]       # ranked by training-split frequency
    remapped = vocabulary.remap(train)
    assert max(max(t) for t in remapped) == 999
    larger = TrimmedVocabulary(gpt2, 4000)
    larger.fit(train)
    assert 0.0 < byte_share(larger.remap(train)) < byte_share(remapped) < 1.0  # more tokens kept, fewer bytes


def test_pack_makes_every_token_a_label_once():
    packed = pack([[1, 2, 3], [4, 5]], [0, 1], seq_length=3, eos_id=9)
    # stream 1 2 3 9 4 5 9 -> rows of 4 with stride 3
    assert packed.tokens.tolist() == [[1, 2, 3, 9], [9, 4, 5, 9]]
    assert packed.domains.tolist() == [0, 0]


def test_stream_state_restores_the_exact_position():
    split = pack([list(range(i, i + 7)) for i in range(40)], [0] * 40, seq_length=4, eos_id=99)
    a = BatchStream(split, 3, seed=5)
    for _ in range(30):
        a.next()
    state = a.state()
    expected = [a.next()[0] for _ in range(50)]
    b = BatchStream(split, 3, seed=5)
    b.restore(state)
    for want in expected:
        np.testing.assert_array_equal(b.next()[0], want)


def test_preprocess_writes_mindrecord_that_reads_back_identically(tmp_path):
    out = tmp_path / "packed"
    args = ["--config", str(ROOT / "model_configs" / "tiny_cpu.yaml"), "--set", "model.seq_length=32",
            "--set", "data.max_documents=400"]
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), *args, "--output", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    from locmoe_ms.data.mindrecord import read_splits
    from locmoe_ms.data.dataset import prepare_data
    cfg = load_config(ROOT / "model_configs" / "tiny_cpu.yaml", args[3::2])
    direct, stored = prepare_data(cfg), read_splits(out, 32)
    for name in ("train", "valid", "test"):
        np.testing.assert_array_equal(direct[name].tokens, stored[name].tokens)
        np.testing.assert_array_equal(direct[name].domains, stored[name].domains)
    with pytest.raises(UserInputError, match="needs 65"):
        read_splits(out, 64)
    again = subprocess.run([sys.executable, str(ROOT / "tools" / "preprocess_data.py"), *args, "--output", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def test_bad_mindrecord_directory(tmp_path):
    from locmoe_ms.data.mindrecord import read_splits
    with pytest.raises(UserInputError, match="train.mindrecord: no such file"):
        read_splits(tmp_path, 32)
    (tmp_path / "train.mindrecord").write_bytes(b"not a mindrecord")
    with pytest.raises(UserInputError, match="not a readable MindRecord"):
        read_splits(tmp_path, 32)


def _split_of_each_marker(splits: dict, seq_length: int) -> dict[str, str]:
    """Which split each document marker ("<d0042>") landed in, read back from the packed byte tokens."""
    found = {}
    for name, split in splits.items():
        rows = split.tokens
        stream = np.concatenate([rows[:, :seq_length].ravel(), rows[-1:, seq_length]])
        text = bytes(int(t) for t in stream if t < 256).decode("utf-8", errors="replace")
        for marker in re.findall(r"<d\d{4}>", text):
            assert found.setdefault(marker, name) == name, f"{marker} in two splits"
    return found


def test_adding_documents_leaves_every_split_unchanged(tmp_path):
    """The same documents land in the same split after new documents are added around them (read back from the
    packed splits of the real pipeline, not from the hash function)."""
    from locmoe_ms.config import config_from_dict
    from locmoe_ms.data.dataset import load_splits
    rng = np.random.default_rng(0)

    def corpus(path, ids):
        path.write_text("".join(json.dumps({"title": f"article {i}", "text": f"<d{i:04d}> " + " ".join(
            rng.choice(["alpha", "beta", "gamma", "delta"], 12))}) + "\n" for i in ids))
        return path

    original = list(range(300))
    grown = sorted(original + list(range(300, 450)), key=lambda i: rng.random())  # new ones interleaved
    found = []
    for name, ids in (("a.jsonl", original), ("b.jsonl", grown)):
        data = config_from_dict({"data": {"corpus": "files", "paths": [str(corpus(tmp_path / name, ids))],
                                          "tokenizer": "byte", "valid_fraction": 0.1, "test_fraction": 0.1}}).data
        found.append(_split_of_each_marker(load_splits(data, 32, build_tokenizer("byte")), 32))
    before, after = found
    common = [m for m in before if m in after and int(m[2:6]) < 300]
    assert len(common) > 250 and {before[m] for m in common} == {"train", "valid", "test"}
    assert [m for m in common if before[m] != after[m]] == []


def test_a_missing_tokenizer_package_names_the_key_and_the_install_line():
    from locmoe_ms.data.corpus import package_file
    with pytest.raises(UserInputError) as err:
        package_file("no_such_package_here", "assets/gpt2.tiktoken", "gpt2", "data.tokenizer")
    assert str(err.value) == ("data.tokenizer = 'gpt2': package no_such_package_here is not installed; run: "
                              "pip install --no-deps openai-whisper==20250625")
