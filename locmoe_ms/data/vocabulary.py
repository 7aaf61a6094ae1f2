"""A smaller vocabulary cut from a subword tokenizer, with byte fallback (as SentencePiece's byte_fallback).

Ids 0-255 are bytes, 256 is end of document, 257.. are the tokenizer's most frequent tokens in the *training*
split (ties broken by id). Any other token is spelled as its UTF-8 bytes, so no text is lost and every split is
encoded the same way. On a small CPU budget this keeps the output layer small (the 50k-way GPT-2 head is three
quarters of the tiny model's FLOPs) while frequent words stay single tokens.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

BYTES = 256
EOS = 256
FIRST_TOKEN = 257


class TrimmedVocabulary:
    def __init__(self, base, size: int):
        if size <= FIRST_TOKEN:
            raise ValueError(f"a trimmed vocabulary needs more than {FIRST_TOKEN} ids, got {size}")
        self.base = base
        self.vocab_size = size
        self.eos_id = EOS
        self._new_of_base: dict[int, int] | None = None
        self._base_of_new: list[int] = []

    def fit(self, train_token_lists: list[list[int]]) -> None:
        """Keep the size - 257 most frequent base tokens of the training split."""
        counts = Counter(i for tokens in train_token_lists for i in tokens)
        ranked = sorted(counts, key=lambda i: (-counts[i], i))[: self.vocab_size - FIRST_TOKEN]
        self._base_of_new = ranked
        self._new_of_base = {base: FIRST_TOKEN + n for n, base in enumerate(ranked)}

    def _spell(self, base_id: int) -> list[int]:
        return list(self.base.decode_bytes([base_id]))

    def remap(self, token_lists: list[list[int]]) -> list[list[int]]:
        if self._new_of_base is None:
            raise RuntimeError("fit() the vocabulary on the training split first")
        table = self._new_of_base
        out = []
        for tokens in token_lists:
            ids: list[int] = []
            for i in tokens:
                new = table.get(i)
                if new is None:
                    ids.extend(self._spell(i))
                else:
                    ids.append(new)
            out.append(ids)
        return out

    def decode(self, ids: list[int]) -> str:
        raw = bytearray()
        for i in ids:
            if i < BYTES:
                raw.append(i)
            elif i >= FIRST_TOKEN:
                raw.extend(self.base.decode_bytes([self._base_of_new[i - FIRST_TOKEN]]))
        return raw.decode("utf-8", errors="replace")


def byte_share(token_lists: list[list[int]]) -> float:
    """Share of ids that are byte fallbacks (for reporting)."""
    flat = np.fromiter((i for t in token_lists for i in t), dtype=np.int64)
    return float((flat < BYTES).mean()) if flat.size else 0.0
