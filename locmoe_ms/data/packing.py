"""Documents packed into fixed-length rows: the split names and the `PackedSplit` every data module passes around."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclass
class PackedSplit:
    """tokens [N, seq_length + 1] int32 (inputs and shifted labels), domains [N] int32."""
    tokens: np.ndarray
    domains: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)


def pack(token_lists: list[list[int]], domains: list[int], seq_length: int, eos_id: int) -> PackedSplit:
    """Concatenate documents (each followed by eos) and cut rows of seq_length + 1 tokens with stride seq_length,
    so every token is a label exactly once. A row's domain is that of the document its first token comes from."""
    lengths = np.array([len(t) + 1 for t in token_lists], dtype=np.int64)
    stream = np.fromiter((i for t in token_lists for i in (*t, eos_id)), dtype=np.int32, count=int(lengths.sum()))
    doc_of_token = np.repeat(np.asarray(domains, dtype=np.int32), lengths)
    rows = (len(stream) - 1) // seq_length
    starts = np.arange(rows, dtype=np.int64) * seq_length
    tokens = stream[starts[:, None] + np.arange(seq_length + 1)]
    return PackedSplit(tokens, doc_of_token[starts] if rows else np.zeros(0, np.int32))
