"""Parallelism: topology and placement, communicators (local, cpu, hccl), the expert exchange, shard strategies and
layouts, MindSpore's auto-parallel context (auto mode) and the Ascend dry-run compile checks."""
