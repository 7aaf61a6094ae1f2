"""locmoe-ms: LocMoE (arXiv 2401.13920) routing and communication on MindSpore, with its baselines."""

__version__ = "0.1.0"
