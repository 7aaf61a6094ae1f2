"""The training loop: batches -> train steps, with metrics, validation, checkpoints and exact resume. What it trains
(either parallel mode) comes built as a `Training` (train/build.py, autoparallel/build.py; job.py picks)."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from locmoe_ms.config import Config
from locmoe_ms.data.dataset import BatchStream, prepare_data
from locmoe_ms.data.sharding import DomainBatchStream, domain_name, domain_rows, row_domains
from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.exchange import TRAFFIC_KINDS
from locmoe_ms.train import checkpoint
from locmoe_ms.train.build import Training
from locmoe_ms.train.evaluation import evaluate, unigram_perplexity
from locmoe_ms.train.optim import learning_rates
from locmoe_ms.train.telemetry import MetricsLog, Progress, machine


def _step_record(step: int, outs, lr: float, tokens_per_s: float) -> dict:
    loss, lm, aux, loc, load, dropped, local, traffic, scale, skipped = (o.asnumpy() for o in outs)
    return {
        "step": step, "loss": float(loss), "lm_loss": float(lm), "aux_loss": float(aux), "locality_loss": float(loc),
        "lr": lr, "tokens_per_s": tokens_per_s, "loss_scale": float(scale), "skipped": bool(skipped > 0.5),
        "moe_layers": [{"tokens_per_expert": load[i].sum(axis=0).astype(int).tolist(),
                        "tokens_per_group": load[i].astype(int).tolist(), "dropped_share": float(dropped[i]),
                        "local_share": float(local[i]),
                        "bytes_sent": dict(zip(TRAFFIC_KINDS, traffic[i].astype(int).tolist()))}
                       for i in range(load.shape[0])],
    }


def save_training(training: Training, ckpt_dir: Path, step: int, meta: dict, keep: int) -> Path:
    """Checkpoint the train step: whole tensors, or in auto mode this rank's slices with the digest of the job's
    strategy (MindSpore wrote it at the first compile)."""
    meta = {**meta, **training.shard_meta}
    if training.sliced:
        meta["strategy_digest"] = checkpoint.strategy_digest(training.strategy_file)
    return checkpoint.save(training.step, ckpt_dir, step, meta, keep, sliced=training.sliced)


def restore_training(cfg: Config, training: Training, path: Path) -> dict:
    """Load a checkpoint of this model, saved by this rank of this job, into the train step; returns its
    metadata. In auto mode the step is compiled first (MindSpore slices the parameters then), and the file must
    come from a job of the same world size and strategy."""
    params, meta = checkpoint.load(path)
    checkpoint.check_same_model(path, meta, cfg)
    if meta.get("rank") != training.rank:
        raise UserInputError(f"{path}: saved by rank {meta.get('rank', 'of a one-process run')}, read by "
                             f"{training.label}; merge, split or reshard it with tools/convert_ckpt.py")
    if training.sliced:
        if meta.get("world_size") != training.world or meta.get("mode") != "auto":
            raise UserInputError(f"{path}: saved by {_saved_by(meta)}, read by {training.label}; reshard it with "
                                 f"tools/convert_ckpt.py reshard")
        training.compile(cfg)
        digest = checkpoint.strategy_digest(training.compiling_strategy)
        if meta.get("strategy_digest") != digest:
            training.compiling_strategy.unlink()
            raise UserInputError(f"{path}: saved under strategy {str(meta.get('strategy_digest'))[:12]}, this job's "
                                 f"is {digest[:12]}; reshard it with tools/convert_ckpt.py reshard (the job's "
                                 f"strategy: tools/ascend_dryrun.py --output-dir)")
    checkpoint.restore(training.step, params, path)
    return meta


def start_training(cfg: Config, training: Training, resume_from: Path | None) -> dict | None:
    """Ready the train step, loading `resume_from` if given (its metadata returned). In auto mode the step is
    compiled here, which is when MindSpore slices the parameters and writes the job's strategy; that strategy
    then becomes the rank directory's strategy.ckpt, which every save's digest names."""
    meta = restore_training(cfg, training, resume_from) if resume_from is not None else None
    if training.sliced:
        training.compile(cfg)
        os.replace(training.compiling_strategy, training.strategy_file)
    return meta


def _saved_by(meta: dict) -> str:
    mode = "auto-parallel" if meta.get("mode") == "auto" else "explicit-mode"
    return f"rank {meta.get('rank')} of {meta.get('world_size')} ({mode})"


def run(cfg: Config, training: Training, device: str, output_dir: Path, resume: bool = False,
        init_from: Path | None = None) -> dict:
    """Train `training` (built for cfg on `device`) to cfg.train.max_steps; returns the final summary (also printed
    and logged). `init_from` only names the checkpoint the model started from, for the error messages."""
    print(f"{training.label} on {device}", flush=True)
    output_dir = Path(output_dir)
    if training.rank is not None:
        output_dir = checkpoint.rank_dir(output_dir, training.rank)
    ckpt_dir = output_dir / "checkpoints"
    existing = checkpoint.list_checkpoints(ckpt_dir)
    if not resume and existing:
        raise UserInputError(f"--output-dir {output_dir}: holds checkpoints already; pass --resume to continue or "
                             f"choose another directory")
    if init_from is not None and resume and existing:
        raise UserInputError(f"--init-from {init_from}: --resume continues from {existing[-1]}; pass one of them")
    if resume and not existing:
        print(f"warning: --resume: no checkpoint in {ckpt_dir}; starting at step 1", file=sys.stderr, flush=True)
    splits = prepare_data(cfg)
    step_cell, optimizer = training.step, training.step.optimizer
    layout = row_domains(cfg)
    stream = BatchStream(splits["train"], cfg.train.batch_size, cfg.train.seed) if layout is None \
        else DomainBatchStream(splits["train"], layout, cfg.train.seed)
    start = 0
    meta = start_training(cfg, training, existing[-1] if resume and existing else None)
    if meta is not None:
        stream.restore(json.loads(meta["data_state"]) if "data_state" in meta else
                       {"epoch": meta["data_epoch"], "index": meta["data_index"]})
        start = int(meta["step"])
        print(f"resumed from {existing[-1]} at step {start}", flush=True)
        if cfg.model.dropout > 0:
            print("warning: model.dropout > 0: MindSpore keeps dropout's random state inside the compiled graph, "
                  "where it cannot be saved, so this resumed run draws other dropout masks than an unbroken run",
                  file=sys.stderr, flush=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    log = MetricsLog(output_dir / "metrics.jsonl", start if resume else None)
    lrs = learning_rates(cfg.train)
    updates = int(optimizer.global_step.asnumpy().reshape(-1)[0])  # skipped steps do not advance the schedule
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_length
    progress = Progress(cfg.train.max_steps, cfg.train.log_every, start)
    unigram = unigram_perplexity(splits["train"], splits["valid"], cfg.model.vocab_size)
    valid_ppl = None
    for step in range(start + 1, cfg.train.max_steps + 1):
        tokens, domains = stream.next()
        began = time.perf_counter()
        outs = step_cell(*training.inputs(tokens, domains, step))
        loss = float(outs[0].asnumpy())
        elapsed = time.perf_counter() - began
        record = _step_record(step, outs, float(lrs[min(updates, len(lrs) - 1)]), tokens_per_step / elapsed)
        if not record["skipped"]:
            updates += 1
            if not math.isfinite(loss):
                raise RuntimeError(f"loss became {loss} at step {step}")
        extra = " | dropped " + "/".join(f"{layer['dropped_share']:.0%}" for layer in record["moe_layers"]) \
            if record["moe_layers"] else ""
        extra += " | overflow: step skipped" if record["skipped"] else ""
        if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
            valid_ppl = evaluate(training.loss_net, splits["valid"], cfg, training.rows, layout)
            record["valid_ppl"] = valid_ppl
            extra += f" | valid ppl {valid_ppl:.1f}"
            if layout is not None:  # each domain's own perplexity, on batches of that domain alone
                record["valid_ppl_by_domain"] = {
                    domain_name(d): evaluate(training.loss_net, domain_rows(splits["valid"], d, "valid"), cfg,
                                             training.rows, np.full_like(layout, d))
                    for d in sorted(set(layout.tolist()))}
        log.write(record)
        progress.show(step, loss, record["tokens_per_s"], extra)
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            state = stream.state()
            position = {"data_state": json.dumps(state)} if layout is not None else \
                {"data_epoch": state["epoch"], "data_index": state["index"]}
            save_training(training, ckpt_dir, step, {**position, "config_json": json.dumps(cfg.to_dict()),
                                                     "valid_ppl": record.get("valid_ppl")}, cfg.train.keep_checkpoints)
    summary = {"steps": cfg.train.max_steps, "router": cfg.moe_config.router, "valid_ppl": valid_ppl,
               "unigram_valid_ppl": unigram, "device": device, "machine": machine()}
    print(f"done: validation perplexity {valid_ppl if valid_ppl is None else round(valid_ppl, 2)} | unigram "
          f"perplexity of the same split {unigram:.2f}", flush=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary
