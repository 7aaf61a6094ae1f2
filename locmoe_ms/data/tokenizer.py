"""Tokenizers that load offline: GPT-2 BPE (tiktoken with the gpt2.tiktoken file shipped in openai-whisper), bytes."""
from __future__ import annotations

from typing import Protocol

from locmoe_ms.data.corpus import package_file
from locmoe_ms.errors import UserInputError

# sha256 of OpenAI's r50k_base (GPT-2) ranks, which whisper's gpt2.tiktoken equals
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


class Tokenizer(Protocol):
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...

    def decode_bytes(self, ids: list[int]) -> bytes: ...


class GPT2Tokenizer:
    def __init__(self):
        try:
            import tiktoken
            from tiktoken.load import load_tiktoken_bpe
            from tiktoken_ext.openai_public import r50k_pat_str
        except ImportError:
            raise UserInputError("data.tokenizer = 'gpt2': tiktoken is not installed; run: pip install tiktoken") \
                from None
        path = package_file("whisper", "assets/gpt2.tiktoken", "gpt2", "data.tokenizer")
        try:
            ranks = load_tiktoken_bpe(str(path), expected_hash=GPT2_SHA256)
        except ValueError:
            raise UserInputError(f"{path}: not the GPT-2 BPE file (sha256 differs); reinstall openai-whisper") from None
        self._enc = tiktoken.Encoding("gpt2", pat_str=r50k_pat_str, mergeable_ranks=ranks,
                                      special_tokens={"<|endoftext|>": 50256})
        self.vocab_size = self._enc.n_vocab
        self.eos_id = 50256

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._enc.encode_ordinary_batch(texts, num_threads=2)

    def decode(self, ids: list[int]) -> str:
        return self._enc.decode(ids)

    def decode_bytes(self, ids: list[int]) -> bytes:
        return self._enc.decode_bytes(ids)


class ByteTokenizer:
    """UTF-8 bytes, id 256 = end of document. A fallback that needs nothing installed."""

    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: list[int]) -> bytes:
        return bytes(i for i in ids if i < 256)


def build_tokenizer(name: str):
    return {"gpt2": GPT2Tokenizer, "byte": ByteTokenizer}[name]()
