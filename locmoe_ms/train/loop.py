"""The training job: data -> model -> train steps, with metrics, validation, checkpoints and exact resume."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.config import Config, ConfigError
from locmoe_ms.data.dataset import BatchStream, eval_batches, load_splits
from locmoe_ms.data.tokenizer import build_tokenizer
from locmoe_ms.errors import UserInputError
from locmoe_ms.model.network import build_model
from locmoe_ms.parallel.communicator import build_communicator
from locmoe_ms.parallel.layout import expert_shard
from locmoe_ms.parallel.placement import Placement
from locmoe_ms.parallel.topology import Topology
from locmoe_ms.parallel.exchange import TRAFFIC_KINDS
from locmoe_ms.train import checkpoint
from locmoe_ms.train.optim import build_optimizer, learning_rates
from locmoe_ms.train.step import TrainStep
from locmoe_ms.train.telemetry import MetricsLog, Progress


def set_context(cfg: Config) -> None:
    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if cfg.train.mode == "graph" else ms.PYNATIVE_MODE)
    if cfg.model.compute_dtype != "float32":
        raise ConfigError(f"model.compute_dtype = {cfg.model.compute_dtype!r}: only float32 runs on CPU; "
                          f"float16/bfloat16 are for Ascend")
    ms.set_seed(cfg.train.seed)


def prepare_data(cfg: Config):
    tokenizer = build_tokenizer(cfg.data.tokenizer)
    if not cfg.data.vocab_limit and tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(f"model.vocab_size = {cfg.model.vocab_size}: smaller than the {cfg.data.tokenizer} "
                          f"tokenizer's vocabulary ({tokenizer.vocab_size})")
    return load_splits(cfg.data, cfg.model.seq_length, tokenizer)


def evaluate(loss_net, split, cfg: Config, rows: slice = slice(None)) -> float:
    """Perplexity over the first eval_batches batches of a split (LM loss only, no router losses).

    Under msrun each rank passes its `rows` of every batch; the loss network averages over ranks."""
    losses = [float(loss_net(Tensor(t[rows]), Tensor(d[rows]))[1]) for t, d in
              eval_batches(split, cfg.train.batch_size, cfg.train.eval_batches)]
    if not losses:
        raise UserInputError(f"train.batch_size = {cfg.train.batch_size}: the evaluation split has fewer sequences")
    return float(math.exp(np.mean(losses)))


def unigram_perplexity(train, valid, vocab: int) -> float:
    """Perplexity of the valid labels under the train labels' unigram distribution (add-one smoothing)."""
    counts = np.bincount(train.tokens[:, 1:].ravel(), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[valid.tokens[:, 1:].ravel()].mean()))


def _step_record(step: int, outs, lr: float, tokens_per_s: float) -> dict:
    loss, lm, aux, loc, load, dropped, local, traffic = (o.asnumpy() for o in outs)
    return {
        "step": step, "loss": float(loss), "lm_loss": float(lm), "aux_loss": float(aux), "locality_loss": float(loc),
        "lr": lr, "tokens_per_s": tokens_per_s,
        "moe_layers": [{"tokens_per_expert": load[i].astype(int).tolist(), "dropped_share": float(dropped[i]),
                        "local_share": float(local[i]),
                        "bytes_sent": dict(zip(TRAFFIC_KINDS, traffic[i].astype(int).tolist()))}
                       for i in range(load.shape[0])],
    }


def build_placement(cfg: Config) -> Placement:
    """One process emulating the config's cluster, or (communicator cpu/hccl) this rank of a real job.

    Collectives are initialised first: msrun also runs this script in its scheduler process, which must stop in
    init() before it touches data or files."""
    topology = Topology.from_config(cfg)
    if cfg.parallel_config.communicator == "hccl" and os.environ.get("RANK_TABLE_FILE"):
        topology.check_rank_table(os.environ["RANK_TABLE_FILE"])
    comm = build_communicator(cfg.parallel_config.communicator, cfg.virtual_devices)
    return Placement(topology, comm)


def build_rank_model(cfg: Config, placement: Placement, init_from: Path | None = None):
    """The loss network of this process, from fresh weights or (init_from) the model weights of a checkpoint such
    as an upcycled one. A rank starts from its share of the one-process model's weights, so a distributed run
    starts exactly where the one-process run starts."""
    full = build_model(cfg)  # first, in every process: the same random draws
    if init_from is not None:
        params, _ = checkpoint.load(init_from)
        checkpoint.restore(full, params, init_from)
    if not placement.distributed:
        return full
    weights = {p.name: p.asnumpy() for p in full.trainable_params()}
    loss_net = build_model(cfg, placement=placement)
    block, blocks = placement.topology.expert_block(placement.rank), placement.topology.expert_parallel
    for param in loss_net.trainable_params():
        param.set_data(Tensor(expert_shard(param.name, weights[param.name], block, blocks)))
    return loss_net


def train(cfg: Config, output_dir: Path, resume: bool = False, init_from: Path | None = None) -> dict:
    """Run training to cfg.train.max_steps; returns the final summary (also printed and logged)."""
    set_context(cfg)
    placement = build_placement(cfg)
    print(placement.label, flush=True)
    output_dir = Path(output_dir)
    if placement.distributed:
        output_dir = checkpoint.rank_dir(output_dir, placement.rank)
    ckpt_dir = output_dir / "checkpoints"
    existing = checkpoint.list_checkpoints(ckpt_dir)
    if not resume and existing:
        raise UserInputError(f"--output-dir {output_dir}: holds checkpoints already; pass --resume to continue or "
                             f"choose another directory")
    splits = prepare_data(cfg)
    if init_from is not None and resume and existing:
        raise UserInputError(f"--init-from {init_from}: --resume continues from {existing[-1]}; pass one of them")
    loss_net = build_rank_model(cfg, placement, init_from)
    optimizer = build_optimizer(loss_net.trainable_params(), cfg.train)
    step_cell = TrainStep(loss_net, optimizer, cfg.train.grad_clip, placement)
    stream = BatchStream(splits["train"], cfg.train.batch_size, cfg.train.seed)
    rows = placement.batch_rows(cfg.train.batch_size)
    start = 0
    if resume and existing:
        params, meta = checkpoint.load(existing[-1])
        if meta.get("rank", placement.rank if placement.distributed else None) != \
                (placement.rank if placement.distributed else None):
            raise UserInputError(f"{existing[-1]}: saved by rank {meta.get('rank', 'of a one-process run')}, "
                                 f"read by {placement.label}; merge or split it with tools/convert_ckpt.py")
        checkpoint.restore(step_cell, params, existing[-1])
        stream.restore({"epoch": meta["data_epoch"], "index": meta["data_index"]})
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
    tokens_per_step = cfg.train.batch_size * cfg.model.seq_length
    progress = Progress(cfg.train.max_steps, cfg.train.log_every, start)
    unigram = unigram_perplexity(splits["train"], splits["valid"], cfg.model.vocab_size)
    valid_ppl = None
    for step in range(start + 1, cfg.train.max_steps + 1):
        tokens, domains = stream.next()
        began = time.perf_counter()
        outs = step_cell(Tensor(tokens[rows]), Tensor(domains[rows]))
        loss = float(outs[0].asnumpy())
        elapsed = time.perf_counter() - began
        if not math.isfinite(loss):
            raise RuntimeError(f"loss became {loss} at step {step}")
        record = _step_record(step, outs, float(lrs[step - 1]), tokens_per_step / elapsed)
        extra = ""
        if step % cfg.train.eval_every == 0 or step == cfg.train.max_steps:
            valid_ppl = evaluate(loss_net, splits["valid"], cfg, rows)
            record["valid_ppl"] = valid_ppl
            extra = f" | valid ppl {valid_ppl:.1f}"
        log.write(record)
        progress.show(step, loss, record["tokens_per_s"], extra)
        if step % cfg.train.save_every == 0 or step == cfg.train.max_steps:
            state = stream.state()
            meta = {"data_epoch": state["epoch"], "data_index": state["index"],
                    "config_json": json.dumps(cfg.to_dict()), "valid_ppl": record.get("valid_ppl")}
            if placement.distributed:
                topo = placement.topology
                meta.update(rank=placement.rank, world_size=topo.world, expert_parallel_rank=topo.expert_block(
                    placement.rank), model_parallel_rank=placement.rank % topo.model_parallel)
            checkpoint.save(step_cell, ckpt_dir, step, meta, cfg.train.keep_checkpoints)
    summary = {"steps": cfg.train.max_steps, "router": cfg.moe_config.router, "valid_ppl": valid_ppl,
               "unigram_valid_ppl": unigram}
    print(f"done: validation perplexity {valid_ppl if valid_ppl is None else round(valid_ppl, 2)} | unigram "
          f"perplexity of the same split {unigram:.2f}", flush=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def evaluate_checkpoint(cfg: Config, path: Path) -> dict:
    """Validation and test perplexity of a saved checkpoint."""
    set_context(cfg)
    params, meta = checkpoint.load(path)
    splits = prepare_data(cfg)
    loss_net = build_model(cfg)
    checkpoint.restore(loss_net, params, path)
    result = {"checkpoint": str(path), "step": int(meta["step"]),
              "valid_ppl": evaluate(loss_net, splits["valid"], cfg), "test_ppl": evaluate(loss_net, splits["test"], cfg)}
    if "valid_ppl" in meta:
        result["valid_ppl_at_save"] = float(meta["valid_ppl"])
    return result


