"""Packed splits as MindRecord files (the format PanGu-alpha pipelines use): DIR/{train,valid,test}.mindrecord."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from locmoe_ms.data.packing import SPLITS, PackedSplit
from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_dir

SCHEMA = {"input_ids": {"type": "int32", "shape": [-1]}, "domain": {"type": "int32"}}


def write_splits(splits: dict, directory: Path) -> None:
    """Write each split to DIR/<split>.mindrecord through a temporary directory renamed at the end."""
    from mindspore.mindrecord import FileWriter

    directory = Path(directory)
    if directory.exists():
        raise UserInputError(f"--output {directory}: already exists; choose a new directory (nothing is overwritten)")
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, split in splits.items():
        writer = FileWriter(str(tmp / f"{name}.mindrecord"), shard_num=1, overwrite=True)
        writer.set_page_size(1 << 22)  # the default 32 MiB page makes even a small split ~50 MB
        writer.add_schema(SCHEMA, "locmoe packed sequences")
        rows = [{"input_ids": t, "domain": int(d)} for t, d in zip(split.tokens, split.domains)]
        for start in range(0, len(rows), 4096):
            writer.write_raw_data(rows[start:start + 4096])
        writer.commit()
    tmp.rename(directory)


def read_splits(directory: str | Path, seq_length: int):
    """The packed splits written by write_splits; the row length must be seq_length + 1."""
    from mindspore.mindrecord import FileReader

    directory = input_dir(directory, "data.paths:", "MindRecord directory (tools/preprocess_data.py writes one)")
    out = {}
    for name in SPLITS:
        path = directory / f"{name}.mindrecord"
        if not path.is_file():
            raise UserInputError(f"data.paths: {path}: no such file (write it with tools/preprocess_data.py)")
        try:
            reader = FileReader(str(path), num_consumer=1)
            rows = list(reader.get_next())
            reader.close()
        except Exception as err:  # MindSpore raises several types for unreadable files
            raise UserInputError(f"data.paths: {path}: not a readable MindRecord file ({str(err).splitlines()[0][:120]})") \
                from None
        if not rows:
            raise UserInputError(f"data.paths: {path}: the file holds no sequences")
        tokens = np.stack([np.asarray(r["input_ids"], dtype=np.int32) for r in rows])
        if tokens.shape[1] != seq_length + 1:
            raise UserInputError(f"data.paths: {path}: rows hold {tokens.shape[1]} tokens; model.seq_length "
                                 f"{seq_length} needs {seq_length + 1} (rerun tools/preprocess_data.py)")
        out[name] = PackedSplit(tokens, np.asarray([int(r["domain"]) for r in rows], dtype=np.int32))
    return out
