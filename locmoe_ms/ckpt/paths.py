"""Checks on file arguments that need no MindSpore, so a wrong path fails at once."""
from __future__ import annotations

import os
from pathlib import Path

from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_file, output_file

FORMATS = {".ckpt": "ckpt", ".safetensors": "safetensors"}


def format_of(path: str | Path) -> str:
    """'ckpt' or 'safetensors' from the file name."""
    fmt = FORMATS.get(Path(path).suffix)
    if fmt is None:
        raise UserInputError(f"{path}: not a checkpoint file name (must end in .ckpt or .safetensors)")
    return fmt


def require_format(output: str | Path, fmt: str) -> None:
    """The output file name must carry the suffix of the format asked for."""
    suffix = {f: s for s, f in FORMATS.items()}[fmt]
    if Path(output).suffix != suffix:
        raise UserInputError(f"--output {output}: a {fmt} file must end in {suffix}")


def require_exists(path: str | Path) -> Path:
    """An input checkpoint file (a directory is named as such)."""
    return input_file(path, what="checkpoint")


def refuse_overwrite(output: str | Path, inputs: list[str | Path]) -> None:
    """One-line error when the output path is one of the inputs (the tools never write over their input)."""
    out = Path(output).resolve()
    for item in inputs:
        if Path(item).resolve() == out or (out.exists() and Path(item).exists() and os.path.samefile(out, item)):
            raise UserInputError(f"--output {output}: is the input {item}; write the result to another path")


def output_checkpoint(output: str | Path, inputs: list[str | Path]) -> Path:
    """The --output checkpoint: a .ckpt/.safetensors name, not a directory, not under a file, not an input."""
    format_of(output)
    output_file(output, "--output")
    refuse_overwrite(output, inputs)
    return Path(output)
