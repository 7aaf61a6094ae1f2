"""The splits of a config's corpus as packed sequences (built, or read back from MindRecord), and a batch stream
whose position can be saved and restored exactly."""
from __future__ import annotations

import numpy as np

from locmoe_ms.config import Config, DataConfig, check_vocabulary
from locmoe_ms.data.corpus import documents, split_of
from locmoe_ms.data.mindrecord import read_splits
from locmoe_ms.data.packing import SPLITS, PackedSplit, pack
from locmoe_ms.data.tokenizer import build_tokenizer
from locmoe_ms.data.vocabulary import TrimmedVocabulary
from locmoe_ms.errors import UserInputError


def load_splits(data: DataConfig, seq_length: int, tokenizer) -> dict[str, PackedSplit]:
    """Documents -> deterministic train/valid/test split by title hash -> packed sequences (or read back the
    packed MindRecord files of tools/preprocess_data.py)."""
    if data.corpus == "mindrecord":
        return read_splits(data.paths[0], seq_length)
    grouped = {s: ([], []) for s in SPLITS}
    docs = documents(data.corpus, data.paths)
    for n, doc in enumerate(docs):
        if data.max_documents and n >= data.max_documents:
            break
        texts, domains = grouped[split_of(doc.title, data.valid_fraction, data.test_fraction)]
        texts.append(doc.text)
        domains.append(doc.domain)
    encoded = {name: tokenizer.encode_batch(texts) for name, (texts, _) in grouped.items()}
    if data.vocab_limit:
        vocabulary = TrimmedVocabulary(tokenizer, data.vocab_limit)
        vocabulary.fit(encoded["train"])
        encoded = {name: vocabulary.remap(lists) for name, lists in encoded.items()}
        tokenizer = vocabulary
    out = {}
    for name, (_, domains) in grouped.items():
        packed = pack(encoded[name], domains, seq_length, tokenizer.eos_id)
        if len(packed) == 0:
            where = ", ".join(data.paths) if data.corpus == "files" else data.corpus
            raise UserInputError(f"data: {where}: the {name} split holds fewer than {seq_length + 1} tokens; "
                                 f"add text or lower model.seq_length")
        out[name] = packed
    return out


def prepare_data(cfg: Config) -> dict[str, PackedSplit]:
    """The config's tokenizer and packed train/valid/test splits (training, evaluation and the tools)."""
    check_vocabulary(cfg)
    tokenizer = build_tokenizer(cfg.data.tokenizer)
    return load_splits(cfg.data, cfg.model.seq_length, tokenizer)


class BatchStream:
    """Shuffled batches of a split, epoch after epoch; `state()` / `restore()` give the exact position."""

    def __init__(self, split: PackedSplit, batch_size: int, seed: int, key: tuple[int, ...] = ()):
        if len(split) < batch_size:
            raise UserInputError(f"train.batch_size = {batch_size}: the split has only {len(split)} sequences")
        self.split = split
        self.batch_size = batch_size
        self.seed = seed
        self.key = key  # tells apart streams of one seed (one per domain in domain-sharded batches)
        self.epoch = 0
        self.index = 0
        self._order = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, *self.key, epoch]).permutation(len(self.split))

    def next(self) -> tuple[np.ndarray, np.ndarray]:
        if self.index + self.batch_size > len(self._order):
            self.epoch += 1
            self.index = 0
            self._order = self._permutation(self.epoch)
        rows = self._order[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return self.split.tokens[rows], self.split.domains[rows]

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index}

    def restore(self, state: dict) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])
        self._order = self._permutation(self.epoch)


def eval_batches(split: PackedSplit, batch_size: int, limit: int, layout: np.ndarray | None = None):
    """The first `limit` full batches of a split, in order (the same every time). With `layout` (the domain of each
    row of a batch, see data/sharding.py) row r of batch b is the next unread row of domain layout[r]."""
    if layout is None:
        count = min(limit, len(split) // batch_size)
        for b in range(count):
            rows = slice(b * batch_size, (b + 1) * batch_size)
            yield split.tokens[rows], split.domains[rows]
        return
    members = {int(d): np.flatnonzero(split.domains == d) for d in np.unique(layout)}
    slots = {d: np.flatnonzero(layout == d) for d in members}
    count = min([limit] + [len(members[d]) // len(slots[d]) for d in members])
    for b in range(count):
        rows = np.empty(batch_size, np.int64)
        for d, where in slots.items():
            rows[where] = members[d][b * len(where):(b + 1) * len(where)]
        yield split.tokens[rows], split.domains[rows]
