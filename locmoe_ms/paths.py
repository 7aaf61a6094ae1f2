"""Checks on path arguments before any work starts: one line naming the argument, the path and what is wrong."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from locmoe_ms.errors import UserInputError


def _name(label: str, path: Path) -> str:
    return f"{label} {path}" if label else str(path)


def input_file(path: str | Path, label: str = "", what: str = "file") -> Path:
    """An existing, readable regular file (a directory is named as such, not as 'not found')."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{_name(label, path)}: is a directory; expected a {what}")
    if not path.exists():
        raise UserInputError(f"{_name(label, path)}: {what} not found")
    if not path.is_file() or not os.access(path, os.R_OK):
        raise UserInputError(f"{_name(label, path)}: not a readable {what}")
    return path


def input_dir(path: str | Path, label: str = "", what: str = "directory") -> Path:
    """An existing directory (a file is named as such)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{_name(label, path)}: is a file; expected a {what}")
    if not path.is_dir():
        raise UserInputError(f"{_name(label, path)}: {what} not found")
    return path


def _writable_ancestor(path: Path, name: str) -> None:
    """The nearest existing ancestor of `path` (or `path` itself) is a directory where a directory can be made (a
    probe made and removed at once, the directory's times restored: nothing is left behind)."""
    ancestor = path.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"{name}: {ancestor} is a file, so nothing can be written under it")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserInputError(f"{name}: {ancestor} is not writable")
    times = ancestor.stat()
    try:  # a virtual or read-only filesystem passes access() for root and still refuses to create anything
        probe = tempfile.mkdtemp(prefix=".locmoe_probe_", dir=ancestor)
    except OSError as err:
        raise UserInputError(f"{name}: nothing can be created under {ancestor} ({err.strerror})") from None
    os.rmdir(probe)
    try:
        os.utime(ancestor, ns=(times.st_atime_ns, times.st_mtime_ns))  # the directory as it was
    except OSError:  # a directory of another owner: its times stay moved, nothing else is
        pass


def output_dir(path: str | Path, label: str = "") -> Path:
    """A directory to write into: an existing directory, or a path whose nearest existing ancestor is a writable
    directory (created later by the writer). Nothing is left here."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserInputError(f"{_name(label, path)}: is a file; expected a directory to write into")
    _writable_ancestor(path, _name(label, path))
    return path


def output_file(path: str | Path, label: str = "") -> Path:
    """A file to write: not a directory, in a directory that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{_name(label, path)}: is a directory; expected a file to write")
    _writable_ancestor(path.absolute().parent, _name(label, path))
    return path
