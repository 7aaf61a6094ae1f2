"""The training job of one process: parallel_config.mode picks what it builds (explicit mode: train/build.py; auto
mode: autoparallel/build.py), then the loop trains it. Above both, so neither imports the other's mode; locmoe-train
and the Ascend dry run (tools/ascend_dryrun.py) build through here."""
from __future__ import annotations

from pathlib import Path

from locmoe_ms.config import Config
from locmoe_ms.train import loop
from locmoe_ms.train.build import Training, build_explicit_training
from locmoe_ms.train.device import set_context


def build_training(cfg: Config, init_from: Path | None = None, output_dir: Path | None = None) -> Training:
    """This process's model and train step for cfg.parallel_config.mode (`init_from`: starting model weights;
    `output_dir`: the run's directory, where auto mode keeps each rank's strategy checkpoint)."""
    if cfg.parallel_config.mode == "auto":
        from locmoe_ms.autoparallel.build import build_auto_training  # Ascend only

        return build_auto_training(cfg, init_from, output_dir)
    return build_explicit_training(cfg, init_from)


def train(cfg: Config, output_dir: Path, resume: bool = False, init_from: Path | None = None) -> dict:
    """Run training to cfg.train.max_steps; returns the final summary (also printed and logged)."""
    device = set_context(cfg)
    training = build_training(cfg, init_from, output_dir)
    return loop.run(cfg, training, device, output_dir, resume, init_from)
