"""Checkpoint conversion behind tools/convert_ckpt.py: inspect, format, merge/split per-rank shards, upcycle, reroute.

Every function works on (params, meta): params maps parameter names to NumPy arrays (bit-exact copies of the stored
tensors), meta holds the metadata ints, floats and strings of locmoe_ms.train.checkpoint.META_KEYS.
May import: everything up to train/ and autoparallel/. Imported by the tools only.
"""
