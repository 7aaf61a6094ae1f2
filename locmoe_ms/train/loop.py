"""The training job: data -> model -> train steps, with metrics, validation, checkpoints and exact resume."""
from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from locmoe_ms.config import Config, ConfigError, check_vocabulary
from locmoe_ms.data.dataset import BatchStream, eval_batches, load_splits
from locmoe_ms.data.sharding import DomainBatchStream, domain_name, domain_rows, row_domains
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
from locmoe_ms.train.telemetry import MetricsLog, Progress, machine


def resolve_device(choice: str) -> str:
    """train.device_target -> MindSpore's device name: auto is Ascend when MindSpore's Ascend plugin loaded."""
    from mindspore._c_expression import MSContext

    ascend = MSContext.get_instance().is_pkg_support_device("Ascend")
    if choice == "ascend" and not ascend:
        reason = MSContext.get_instance().load_plugin_error().strip().splitlines()
        raise ConfigError(f"train.device_target = 'ascend': MindSpore cannot use Ascend on this machine"
                          f"{' (' + reason[0][:120] + ')' if reason else ''}; use cpu or auto")
    return "Ascend" if choice == "ascend" or (choice == "auto" and ascend) else "CPU"


def device_id() -> int:
    """The NPU of this rank: DEVICE_ID from the launcher's environment (0 when unset)."""
    text = os.environ.get("DEVICE_ID", "0")
    if not text.isdigit() or int(text) > 4095:
        raise UserInputError(f"DEVICE_ID = {text!r}: must be an integer 0..4095 (the launchers export it)")
    return int(text)


def set_context(cfg: Config) -> str:
    """Device, execution mode and seed for this process; returns the device ("Ascend" or "CPU")."""
    target = resolve_device(cfg.train.device_target)
    if target == "CPU" and cfg.model.compute_dtype != "float32":
        raise ConfigError(f"model.compute_dtype = {cfg.model.compute_dtype!r}: float16/bfloat16 matmuls need Ascend "
                          f"and this run is on CPU (train.device_target = {cfg.train.device_target!r}); pass "
                          f"--set model.compute_dtype=float32")
    if target == "Ascend":
        ms.set_device("Ascend", device_id())
    else:
        ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE if cfg.train.mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_seed(cfg.train.seed)
    return target


def prepare_data(cfg: Config):
    check_vocabulary(cfg)
    tokenizer = build_tokenizer(cfg.data.tokenizer)
    return load_splits(cfg.data, cfg.model.seq_length, tokenizer)


def evaluate(loss_net, split, cfg: Config, rows: slice = slice(None), layout: np.ndarray | None = None) -> float:
    """Perplexity over the first eval_batches batches of a split (LM loss only, no router losses), in eval mode
    (dropout off); the network's train/eval mode is restored afterwards. `layout`: domain-sharded batches
    (data/sharding.py), as in training.

    Under msrun each rank passes its `rows` of every batch; the loss network averages over ranks."""
    was_training = loss_net.training
    loss_net.set_train(False)
    try:
        losses = [float(loss_net(Tensor(t[rows]), Tensor(d[rows]))[1]) for t, d in
                  eval_batches(split, cfg.train.batch_size, cfg.train.eval_batches, layout)]
    finally:
        loss_net.set_train(was_training)
    if not losses:
        raise UserInputError(f"train.batch_size = {cfg.train.batch_size}: the evaluation split has fewer sequences")
    return float(math.exp(np.mean(losses)))


def unigram_perplexity(train, valid, vocab: int) -> float:
    """Perplexity of the valid labels under the train labels' unigram distribution (add-one smoothing)."""
    counts = np.bincount(train.tokens[:, 1:].ravel(), minlength=vocab).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(np.exp(-logp[valid.tokens[:, 1:].ravel()].mean()))


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
    if init_from is not None:  # any config: every model parameter by name and shape; optimizer state ignored
        params, _ = checkpoint.load(init_from)
        checkpoint.restore(full, params, init_from, model_only=True)
    if not placement.distributed:
        return full
    block, blocks = placement.topology.expert_block(placement.rank), placement.topology.expert_parallel
    shares = {}
    for param in full.get_parameters():  # the draws in the same order; one whole tensor in memory at a time
        value = param.asnumpy()
        shares[param.name] = expert_shard(param.name, value, block, blocks).copy()  # a view would keep it whole
        param.set_data(Tensor(np.zeros((1,) * value.ndim, value.dtype)), slice_shape=True)  # frees the whole one
        del value
    del full
    loss_net = build_model(cfg, placement=placement)
    for param in loss_net.get_parameters():  # frozen ones too: bias balancing's balance_bias of init_from
        param.set_data(Tensor(shares.pop(param.name)))
    return loss_net


@dataclass
class Training:
    """What this process trains: the loss network, the train step around it, its rows of every global batch and
    its rank (None in a one-process run). Built the same way by locmoe-train and by the Ascend dry-run compile."""
    loss_net: nn.Cell
    step: TrainStep
    rows: slice
    rank: int | None
    world: int
    label: str
    shard_meta: dict             # checkpoint metadata naming the shard this process holds
    inject_overflow: frozenset = frozenset()

    def inputs(self, tokens: np.ndarray, domains: np.ndarray, step: int) -> tuple[Tensor, Tensor, Tensor]:
        """The train step's inputs for global batch (tokens, domains) at `step` (counted from 1)."""
        inject = math.inf if step in self.inject_overflow else 0.0
        return Tensor(tokens[self.rows]), Tensor(domains[self.rows]), Tensor(inject, ms.float32)


def build_training(cfg: Config, init_from: Path | None = None) -> Training:
    """Collectives, model and train step for cfg.parallel_config.mode: `explicit` (a per-rank model, the exchange
    over the communicator; one process emulates the cluster with `local`) or `auto` (one full-batch model sharded
    by MindSpore's auto-parallel from parallel/strategies.py, Ascend only)."""
    if cfg.parallel_config.mode == "auto":
        from mindspore.communication import get_group_size, get_rank
        from locmoe_ms.parallel.auto import build_auto_model
        from locmoe_ms.parallel.communicator import WorldAllReduce

        loss_net, rows = build_auto_model(cfg, init_from)
        rank, world = get_rank(), get_group_size()
        optimizer = build_optimizer(loss_net.trainable_params(), cfg.train)
        step = TrainStep(loss_net, optimizer, cfg.train, world_sum=WorldAllReduce() if world > 1 else None)
        step.set_train(True)
        return Training(loss_net, step, rows, rank, world, f"rank {rank} of {world} (auto-parallel)",
                        {"rank": rank, "world_size": world}, frozenset(cfg.train.inject_overflow_steps) if rank == 0 else frozenset())
    placement = build_placement(cfg)
    loss_net = build_rank_model(cfg, placement, init_from)
    step = TrainStep(loss_net, build_optimizer(loss_net.trainable_params(), cfg.train), cfg.train, placement)
    step.set_train(True)  # dropout on; evaluate() switches it off for its batches
    rank, topo = (placement.rank if placement.distributed else None), placement.topology
    shard = {} if rank is None else {"rank": rank, "world_size": topo.world, "expert_parallel_rank":
                                     topo.expert_block(rank), "model_parallel_rank": rank % topo.model_parallel}
    return Training(loss_net, step, placement.batch_rows(cfg.train.batch_size), rank, placement.comm.world,
                    placement.label, shard, frozenset(cfg.train.inject_overflow_steps) if not rank else frozenset())


def train(cfg: Config, output_dir: Path, resume: bool = False, init_from: Path | None = None) -> dict:
    """Run training to cfg.train.max_steps; returns the final summary (also printed and logged)."""
    device = set_context(cfg)
    training = build_training(cfg, init_from)
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
    if resume and existing:
        params, meta = checkpoint.load(existing[-1])
        checkpoint.check_same_model(existing[-1], meta, cfg)
        if meta.get("rank") != training.rank:
            raise UserInputError(f"{existing[-1]}: saved by rank {meta.get('rank', 'of a one-process run')}, "
                                 f"read by {training.label}; merge or split it with tools/convert_ckpt.py")
        checkpoint.restore(step_cell, params, existing[-1])
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
            meta = {**position,
                    "config_json": json.dumps(cfg.to_dict()), "valid_ppl": record.get("valid_ppl"),
                    **training.shard_meta}
            checkpoint.save(step_cell, ckpt_dir, step, meta, cfg.train.keep_checkpoints)
    summary = {"steps": cfg.train.max_steps, "router": cfg.moe_config.router, "valid_ppl": valid_ppl,
               "unigram_valid_ppl": unigram, "device": device, "machine": machine()}
    print(f"done: validation perplexity {valid_ppl if valid_ppl is None else round(valid_ppl, 2)} | unigram "
          f"perplexity of the same split {unigram:.2f}", flush=True)
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def evaluate_checkpoint(cfg: Config, path: Path) -> dict:
    """Validation and test perplexity of a saved checkpoint."""
    set_context(cfg)
    params, meta = checkpoint.load(path)
    checkpoint.check_same_model(path, meta, cfg)
    splits = prepare_data(cfg)
    loss_net = build_model(cfg)
    checkpoint.restore(loss_net, params, path, model_only=True)
    result = {"checkpoint": str(path), "step": int(meta["step"]),
              "valid_ppl": evaluate(loss_net, splits["valid"], cfg, layout=row_domains(cfg)),
              "test_ppl": evaluate(loss_net, splits["test"], cfg, layout=row_domains(cfg))}
    if "valid_ppl" in meta:
        result["valid_ppl_at_save"] = float(meta["valid_ppl"])
    return result


