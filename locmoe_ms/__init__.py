"""locmoe-ms: LocMoE (arXiv 2401.13920) routing and communication on MindSpore, with its baselines.

Floors, bottom up; a module imports only from its own floor or below, never above, not even inside a function
(tests/test_import_floors.py walks every import):
errors, paths -> config, capacity -> cluster (rank tables) -> parallel (substrate) -> layers -> moe -> model
-> data -> train -> autoparallel (auto mode) -> job -> ckpt -> planning -> experiments -> cli, __main__.
"""

__version__ = "0.1.0"
