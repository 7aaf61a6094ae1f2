"""YAML -> typed config. Every invalid value raises one ConfigError naming the key, the value and what is allowed.

Each field carries its own rule (type from the annotation, range or choices from `rule(...)`); rules that relate
several fields live in `_check_relations`. The loader never imports MindSpore, so tools can validate cheaply.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import yaml

from locmoe_ms.capacity import group_capacity
from locmoe_ms.errors import UserInputError
from locmoe_ms.paths import input_file

# Router name -> the gate it learns (None: a fixed, parameter-free assignment). The router registry in
# locmoe_ms.moe.routers is keyed by the same names; a test keeps the two in step.
ROUTER_GATES = {"locmoe": "grap", "switch": "dense", "hash": None, "rre": None}
# Vocabulary of each data.tokenizer (GPT-2 BPE's 50257 ids; 256 bytes + end of document), known without loading it.
TOKENIZER_VOCAB = {"gpt2": 50257, "byte": 257}


class ConfigError(UserInputError):
    """An invalid config value; the message names the key, the value and what is allowed."""


def rule(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
         lt: float | None = None, choices: tuple | None = None, item_ge: int | None = None, help: str = ""):
    """A dataclass field with its validation rule attached."""
    meta = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices, "item_ge": item_ge, "help": help}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelConfig:
    vocab_size: int = rule(50257, ge=2, help="tokenizer vocabulary size (the data pipeline may raise it)")
    hidden_size: int = rule(256, ge=1)
    num_heads: int = rule(4, ge=1)
    ffn_hidden_size: int = rule(1024, ge=1, help="dense FFN and per-expert FFN inner size")
    num_layers: int = rule(4, ge=1, help="transformer blocks below the query layer")
    sparse_layers: List[int] = rule([1, 3], item_ge=0, help="indices of blocks whose FFN is an MoE layer")
    seq_length: int = rule(128, ge=2)
    activation: str = rule("gelu", choices=("gelu", "gelu_tanh", "fast_gelu", "relu"),
                           help="gelu is the paper's exact GeLU")
    dropout: float = rule(0.0, ge=0.0, lt=1.0)
    layernorm_eps: float = rule(1e-5, gt=0.0)
    init_std: float = rule(0.02, gt=0.0)
    compute_dtype: str = rule("float32", choices=("float32", "float16", "bfloat16"),
                              help="matmul dtype; float16/bfloat16 need Ascend (LayerNorm, softmax, the router "
                                   "and the losses stay float32)")
    recompute: bool = rule(False, help="recompute each block's activations in the backward pass (Cell.recompute)")


@dataclass
class MoEConfig:
    expert_num: int = rule(8, ge=1)
    router: str = rule("locmoe", choices=tuple(ROUTER_GATES))
    capacity_factor: float = rule(1.25, gt=0.0)
    min_capacity: int = rule(1, ge=1, help="lower limit on slots per expert")
    aux_loss_factor: float = rule(0.01, ge=0.0, help="alpha of the auxiliary load-balance loss")
    locality_loss_factor: float = rule(0.01, ge=0.0, help="mu of the locality loss (locmoe only)")
    locality_eps: float = rule(0.01, gt=0.0, lt=1.0, help="mass of the uniform part of the localized target")
    rre_groups: int = rule(2, ge=1, help="expert groups of the rre router's first level")
    rre_group_by: str = rule("token", choices=("token", "domain"), help="rre first level: token hash or domain id")
    hash_seed: int = rule(1234, ge=0, help="seed of the fixed hash tables (hash, rre)")
    # Router health options (learned routers; off by default, so the defaults stay the paper's)
    grap_relu: bool = rule(True, help="locmoe: the GrAP gate's ReLU, as in the paper; false: logits W x + b, so "
                                      "an expert whose pre-activation is negative for every token still learns")
    z_loss_factor: float = rule(0.0, ge=0.0, help="router z-loss (ST-MoE, 1e-3 there): factor * mean over the "
                                                  "batch of logsumexp(logits)^2, added to aux_loss")
    router_jitter: float = rule(0.0, ge=0.0, lt=1.0, help="in training, multiply the router's input by noise "
                                                          "uniform in [1 - j, 1 + j] (Switch's input jitter)")
    bias_balance_rate: float = rule(0.0, ge=0.0, help="auxiliary-loss-free balancing (DeepSeek-V3): a per-expert "
                                                      "bias added to the probabilities for the choice only, moved "
                                                      "by this rate toward under-loaded experts after every "
                                                      "training step (by the sign of the load error, no gradient)")


@dataclass
class ParallelConfig:
    nodes: int = rule(2, ge=1, help="servers; a single process emulates them as a virtual topology")
    devices_per_node: int = rule(4, ge=1)
    data_parallel: int = rule(8, ge=1)
    model_parallel: int = rule(1, ge=1)
    expert_parallel: int = rule(1, ge=1)
    communicator: str = rule("local", choices=("local", "cpu", "hccl"),
                             help="local: one process (virtual cluster); cpu: msrun on CPU; hccl: Ascend")
    exchange: str = rule("groupwise", choices=("plain", "groupwise"),
                         help="All-to-All of the full payload, or LocMoE's 1/t per tensor-parallel rank + All-Gather")
    exchange_chunks: int = rule(1, ge=1, help="capacity chunks pipelined through exchange and expert FFN")
    count_aware: bool = rule(False, help="send only filled slots (AlltoAllV); counts bytes of filled slots")
    mode: str = rule("explicit", choices=("explicit", "auto"),
                     help="explicit: a per-rank model with the exchange over the communicator; auto: one full-batch "
                          "model sharded by MindSpore's auto-parallel from autoparallel/table.py (Ascend)")
    optimizer_shard: bool = rule(False, help="auto mode: MindSpore's parallel optimizer, each weight and its AdamW "
                                 "moments stored split over the devices holding the same slice (dense: data "
                                 "parallel; experts: their dp/ep copies), gathered before use")


@dataclass
class TrainConfig:
    batch_size: int = rule(8, ge=1, help="global batch, in sequences: one optimizer update")
    micro_batches: int = rule(1, ge=1, help="gradient accumulation: each step runs batch_size / micro_batches "
                              "sequences at a time and sums their gradients before one update (MindFormers' "
                              "gradient_accumulation_steps; Megatron's global batch = micro batch x dp x this)")
    max_steps: int = rule(300, ge=1)
    learning_rate: float = rule(1e-3, gt=0.0)
    min_learning_rate: float = rule(1e-4, ge=0.0)
    warmup_steps: int = rule(20, ge=0)
    weight_decay: float = rule(0.01, ge=0.0)
    grad_clip: float = rule(1.0, ge=0.0, help="global norm; 0 disables")
    seed: int = rule(0, ge=0)
    mode: str = rule("graph", choices=("graph", "pynative"))
    device_target: str = rule("auto", choices=("auto", "cpu", "ascend"),
                              help="auto: Ascend when MindSpore can use it, else CPU")
    loss_scale: str = rule("none", choices=("dynamic", "fixed", "none"),
                           help="dynamic: MindSpore's DynamicLossScaler; fixed: a constant scale; both skip a step "
                                "whose gradients overflow")
    loss_scale_value: float = rule(65536.0, ge=1.0, help="the initial (dynamic) or constant (fixed) loss scale")
    loss_scale_factor: int = rule(2, ge=2, help="dynamic: the scale grows by this factor and backs off by its "
                                                "inverse (MindSpore's DynamicLossScaler has one factor for both)")
    loss_scale_window: int = rule(1000, ge=1, help="dynamic: overflow-free steps before the scale grows")
    inject_overflow_steps: List[int] = rule([], item_ge=1, help="steps whose gradients rank 0 makes infinite after "
                                                               "the backward pass: exercises the overflow path")
    log_every: int = rule(10, ge=1)
    eval_every: int = rule(100, ge=1)
    eval_batches: int = rule(8, ge=1)
    save_every: int = rule(100, ge=1)
    keep_checkpoints: int = rule(2, ge=1)


@dataclass
class DataConfig:
    corpus: str = rule("wiki_en", choices=("wiki_en", "peoples_daily", "wiki_en+peoples_daily", "files",
                                           "mindrecord"), help="wiki_en+peoples_daily: both, domain ids 0 and 1")
    paths: List[str] = rule([], help="corpus files: .txt/.jsonl files; corpus mindrecord: one directory written by "
                                     "tools/preprocess_data.py")
    tokenizer: str = rule("gpt2", choices=("gpt2", "byte"))
    valid_fraction: float = rule(0.05, gt=0.0, lt=0.5)
    test_fraction: float = rule(0.05, gt=0.0, lt=0.5)
    max_documents: int = rule(0, ge=0, help="0 = all")
    vocab_limit: int = rule(0, ge=0, help="0 = the tokenizer's vocabulary; N > 257: bytes, end of document and the "
                                          "N - 257 most frequent tokens of the training split (byte fallback)")
    node_domains: List[int] = rule([], item_ge=0, help="domain-sharded batches, one domain id per node: the token "
                                                       "groups of node n read only documents of domain "
                                                       "node_domains[n] (wiki_en 0, peoples_daily 1); empty: every "
                                                       "group reads the same mixture")


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    moe_config: MoEConfig = field(default_factory=MoEConfig)
    parallel_config: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def micro_batch_size(self) -> int:
        """Sequences the model computes at a time: the global batch over train.micro_batches."""
        return self.train.batch_size // self.train.micro_batches

    @property
    def virtual_devices(self) -> int:
        return self.parallel_config.nodes * self.parallel_config.devices_per_node

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config)}
_SECTION_TYPES = typing.get_type_hints(Config)


def _describe_rule(meta: dict, typ: Any) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(map(str, meta["choices"]))
    parts = []
    for key, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if meta.get(key) is not None:
            parts.append(f"{sym} {meta[key]}")
    name = _type_name(typ)
    return f"{name} {' and '.join(parts)}".strip()


def _type_name(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin in (list, List):
        return f"a list of {_type_name(typing.get_args(typ)[0])}"
    if origin is typing.Union:
        return " or ".join(_type_name(a) for a in typing.get_args(typ) if a is not type(None)) + " or null"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(typ, str(typ))


_YAML11_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check `value` against the annotation `typ`; ints are accepted where floats are expected."""
    origin = typing.get_origin(typ)
    if origin is typing.Union:
        if value is None:
            return None
        inner = [a for a in typing.get_args(typ) if a is not type(None)][0]
        return _coerce(key, value, inner)
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{key} = {value!r}: must be {_type_name(typ)}")
        return [_coerce(f"{key}[{i}]", v, typing.get_args(typ)[0]) for i, v in enumerate(value)]
    if typ is float and isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
        value = float(value)  # PyYAML reads 3e-4 (no decimal point) as a string; users mean the number
    ok = {
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
        str: isinstance(value, str),
        bool: isinstance(value, bool),
    }[typ]
    if not ok:
        raise ConfigError(f"{key} = {value!r}: must be {_type_name(typ)}")
    return float(value) if typ is float else value


def _check_rule(key: str, value: Any, meta: dict, typ: Any) -> None:
    items = value if isinstance(value, list) else [value]
    if isinstance(value, list):
        if meta.get("item_ge") is not None and any(v < meta["item_ge"] for v in items):
            raise ConfigError(f"{key} = {value!r}: every item must be >= {meta['item_ge']}")
        return
    bad = (
        (meta.get("choices") and value not in meta["choices"])
        or (meta.get("ge") is not None and value < meta["ge"])
        or (meta.get("gt") is not None and value <= meta["gt"])
        or (meta.get("le") is not None and value > meta["le"])
        or (meta.get("lt") is not None and value >= meta["lt"])
    )
    if bad:
        raise ConfigError(f"{key} = {value!r}: must be {_describe_rule(meta, typ)}")


def _build_section(name: str, raw: Any):
    cls = _SECTION_TYPES[name]
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{name} = {raw!r}: must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key; allowed: {', '.join(fields)}")
    values = {}
    for key, f in fields.items():
        if key not in raw:
            continue
        full = f"{name}.{key}"
        value = _coerce(full, raw[key], hints[key])
        _check_rule(full, value, dict(f.metadata), hints[key])
        values[key] = value
    return cls(**values)


def _check_relations(cfg: Config) -> None:
    """Rules that tie several fields together."""
    m, moe, tr = cfg.model, cfg.moe_config, cfg.train
    if m.hidden_size % m.num_heads:
        raise ConfigError(f"model.hidden_size = {m.hidden_size}: must be divisible by model.num_heads ({m.num_heads})")
    for idx in m.sparse_layers:
        if idx >= m.num_layers:
            raise ConfigError(f"model.sparse_layers = {m.sparse_layers}: indices must be < model.num_layers "
                              f"({m.num_layers})")
    if len(set(m.sparse_layers)) != len(m.sparse_layers):
        raise ConfigError(f"model.sparse_layers = {m.sparse_layers}: indices must be unique")
    if ROUTER_GATES[moe.router] == "grap" and m.hidden_size < moe.expert_num:
        raise ConfigError(f"moe_config.expert_num = {moe.expert_num}: the GrAP gate of router '{moe.router}' needs "
                          f"expert_num <= model.hidden_size ({m.hidden_size})")
    check_parallel_sizes(cfg)
    _check_router_options(moe)
    if moe.expert_num % moe.rre_groups:
        raise ConfigError(f"moe_config.rre_groups = {moe.rre_groups}: must divide moe_config.expert_num "
                          f"({moe.expert_num})")
    if tr.inject_overflow_steps and tr.loss_scale == "none":
        raise ConfigError(f"train.inject_overflow_steps = {tr.inject_overflow_steps}: needs train.loss_scale dynamic "
                          f"or fixed (with 'none' nothing detects the overflow)")
    if tr.min_learning_rate > tr.learning_rate:
        raise ConfigError(f"train.min_learning_rate = {tr.min_learning_rate}: must be <= train.learning_rate "
                          f"({tr.learning_rate})")
    if cfg.data.vocab_limit and not 257 < cfg.data.vocab_limit <= m.vocab_size:
        raise ConfigError(f"data.vocab_limit = {cfg.data.vocab_limit}: must be 0 or in 258..model.vocab_size "
                          f"({m.vocab_size})")
    if cfg.data.corpus == "files" and not cfg.data.paths:
        raise ConfigError("data.paths = []: corpus 'files' needs at least one .txt or .jsonl path")
    if cfg.data.corpus == "mindrecord" and len(cfg.data.paths) != 1:
        raise ConfigError(f"data.paths = {cfg.data.paths}: corpus 'mindrecord' needs exactly one directory written "
                          f"by tools/preprocess_data.py")
    _check_node_domains(cfg)
    if cfg.data.valid_fraction + cfg.data.test_fraction >= 0.5:
        raise ConfigError(f"data.test_fraction = {cfg.data.test_fraction}: valid_fraction + test_fraction must be "
                          f"< 0.5")


# Domain ids each built-in corpus holds (files and mindrecord: whatever their documents say, checked on loading).
CORPUS_DOMAINS = {"wiki_en": (0,), "peoples_daily": (1,), "wiki_en+peoples_daily": (0, 1)}


def _check_node_domains(cfg: Config) -> None:
    """data.node_domains names a domain per node, each one the corpus holds, and needs several domains."""
    domains, corpus = cfg.data.node_domains, cfg.data.corpus
    if not domains:
        return
    if len(domains) != cfg.parallel_config.nodes:
        raise ConfigError(f"data.node_domains = {domains}: needs one domain id per node (parallel_config.nodes = "
                          f"{cfg.parallel_config.nodes})")
    held = CORPUS_DOMAINS.get(corpus)
    if held is not None and len(held) < 2:
        raise ConfigError(f"data.node_domains = {domains}: corpus '{corpus}' has one domain; domain-sharded data "
                          f"needs several (wiki_en+peoples_daily, or files whose lines carry a \"domain\")")
    if held is not None and set(domains) - set(held):
        raise ConfigError(f"data.node_domains = {domains}: corpus '{corpus}' holds domains {list(held)} only")


def _check_router_options(moe: MoEConfig) -> None:
    """The health options act on a learned gate: refused for fixed routers, the ReLU switch for GrAP only."""
    gate = ROUTER_GATES[moe.router]
    defaults = MoEConfig()
    for key in ("z_loss_factor", "router_jitter", "bias_balance_rate"):
        if gate is None and getattr(moe, key) != getattr(defaults, key):
            raise ConfigError(f"moe_config.{key} = {getattr(moe, key)}: acts on a learned gate; router "
                              f"'{moe.router}' has none (allowed there: {getattr(defaults, key)})")
    if gate != "grap" and not moe.grap_relu:
        raise ConfigError(f"moe_config.grap_relu = false: only the GrAP gate (router locmoe) has the ReLU; router "
                          f"'{moe.router}' allows true only")


def check_vocabulary(cfg: Config) -> None:
    """The tokenizer's ids must fit the embedding (a rule of the data pipeline, checked by load_config so that
    locmoe-check-config and every entry point stop before any data or MindSpore work; configs built in code for
    models without data skip it)."""
    tokenizer_vocab = TOKENIZER_VOCAB[cfg.data.tokenizer]
    if not cfg.data.vocab_limit and cfg.model.vocab_size < tokenizer_vocab:
        raise ConfigError(f"model.vocab_size = {cfg.model.vocab_size}: smaller than the {cfg.data.tokenizer} "
                          f"tokenizer's vocabulary ({tokenizer_vocab}); raise it or set data.vocab_limit (byte "
                          f"fallback)")


def check_parallel_sizes(cfg: Config) -> None:
    """Every rule on the parallel sizes, in one place: the config loader, Topology and the shard strategies use it,
    so locmoe-check-config rejects whatever a launch would reject."""
    m, moe, par, tr = cfg.model, cfg.moe_config, cfg.parallel_config, cfg.train
    dp, mp, ep, world = par.data_parallel, par.model_parallel, par.expert_parallel, cfg.virtual_devices
    if tr.batch_size % tr.micro_batches:
        raise ConfigError(f"train.micro_batches = {tr.micro_batches}: must divide train.batch_size ({tr.batch_size})")
    micro = tr.batch_size // tr.micro_batches  # the sequences the model computes at a time
    rules = (
        (dp * mp != world, "parallel_config.data_parallel", dp,
         f"data_parallel * model_parallel ({dp} * {mp}) must equal nodes * devices_per_node ({world})"),
        (par.devices_per_node % mp, "parallel_config.model_parallel", mp,
         f"must divide devices_per_node ({par.devices_per_node}): a tensor-parallel group stays inside a node"),
        (moe.expert_num % ep, "parallel_config.expert_parallel", ep,
         f"must divide moe_config.expert_num ({moe.expert_num})"),
        (dp % ep, "parallel_config.expert_parallel", ep, f"must divide parallel_config.data_parallel ({dp})"),
        (m.num_heads % mp, "model.num_heads", m.num_heads, f"must be divisible by parallel_config.model_parallel ({mp})"),
        (m.hidden_size % mp, "model.hidden_size", m.hidden_size,
         f"must be divisible by parallel_config.model_parallel ({mp})"),
        (m.ffn_hidden_size % mp, "model.ffn_hidden_size", m.ffn_hidden_size,
         f"must be divisible by parallel_config.model_parallel ({mp})"),
        (micro % dp, "train.batch_size", tr.batch_size,
         f"must be divisible by parallel_config.data_parallel ({dp})" if tr.micro_batches == 1 else
         f"batch_size / micro_batches ({micro}) must be divisible by parallel_config.data_parallel ({dp})"),
        ((micro * m.seq_length) % world, "train.batch_size", tr.batch_size,
         f"{'batch_size' if tr.micro_batches == 1 else 'batch_size / micro_batches'} * model.seq_length "
         f"({micro * m.seq_length}) must be divisible by nodes * devices_per_node ({world})"),
    )
    for bad, key, value, allowed in rules:
        if bad:
            raise ConfigError(f"{key} = {value}: {allowed}")
    if par.mode == "auto" and m.vocab_size % mp:
        raise ConfigError(f"model.vocab_size = {m.vocab_size}: in auto mode the vocabulary is split over "
                          f"parallel_config.model_parallel ({mp}) and must be divisible by it; pad it (GPT-2's 50257 "
                          f"ids fit in 50304)")
    if par.optimizer_shard and par.mode != "auto":
        raise ConfigError(f"parallel_config.optimizer_shard = true: needs parallel_config.mode auto (MindSpore's "
                          f"parallel optimizer); mode {par.mode!r} keeps whole replicas")
    if par.mode == "auto" and mp > 1:
        capacity = group_capacity(micro * m.seq_length // dp, moe, ep)
        if capacity % mp:
            raise ConfigError(f"moe_config.capacity_factor = {moe.capacity_factor}: in auto mode the capacity per "
                              f"token group and expert ({capacity}) must be a multiple of model_parallel ({mp}); "
                              f"change capacity_factor, min_capacity or train.batch_size")


def config_from_dict(raw: Any) -> Config:
    """Build and validate a Config from a parsed YAML mapping."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"top level = {type(raw).__name__}: must be a mapping with sections "
                          f"{', '.join(SECTIONS)}")
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(f"{key}: unknown section; allowed: {', '.join(SECTIONS)}")
    cfg = Config(**{name: _build_section(name, raw.get(name)) for name in SECTIONS})
    _check_relations(cfg)
    return cfg


def read_yaml(path: str | Path) -> dict:
    """Parse a YAML file; a missing file or malformed YAML is a one-line ConfigError naming the file."""
    try:
        path = input_file(path, what="config file")
    except UserInputError as err:
        raise ConfigError(str(err)) from None
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    if raw is None:  # an empty file would train every default silently
        raise ConfigError(f"{path}: the file is empty; a config is a mapping with sections {', '.join(SECTIONS)}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level = {str(raw)[:60]!r}: must be a mapping with sections "
                          f"{', '.join(SECTIONS)}")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` overrides (value parsed as YAML) to a raw config mapping."""
    out = copy.deepcopy(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if len(keys) != 2 or not all(keys):
            raise ConfigError(f"--set {item!r}: the key must be section.key, for example model.hidden_size")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML") from None
        section = out.setdefault(keys[0], {})
        if not isinstance(section, dict):
            raise ConfigError(f"--set {item!r}: section {keys[0]} is not a mapping")
        section[keys[1]] = value
    return out


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def read_config_tree(path: str | Path, _seen: tuple = ()) -> dict:
    """Read a YAML config; a top-level `base: other.yaml` (relative to this file) is read first and overridden."""
    path = Path(path)
    if path.resolve() in _seen:
        raise ConfigError(f"{path}: base = {path.name!r}: configs include each other in a cycle")
    raw = read_yaml(path)
    if not isinstance(raw, dict) or "base" not in raw:
        return raw
    base = raw.pop("base")
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base = {base!r}: must be the path of another YAML config")
    return _merge(read_config_tree(path.parent / base, _seen + (path.resolve(),)), raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a YAML config; errors are prefixed with the file name."""
    raw = apply_overrides(read_config_tree(path), overrides or [])
    try:
        cfg = config_from_dict(raw)
        check_vocabulary(cfg)
        return cfg
    except ConfigError as err:
        msg = str(err)
        raise ConfigError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None


def field_help(section: str) -> dict[str, str]:
    """Key -> allowed values, default and help text (locmoe-check-config --explain)."""
    cls = _SECTION_TYPES[section]
    hints = typing.get_type_hints(cls)
    defaults = dataclasses.asdict(cls())
    return {f.name: f"{_describe_rule(dict(f.metadata), hints[f.name])} (default {defaults[f.name]!r}). "
                    f"{f.metadata.get('help', '')}".strip()
            for f in dataclasses.fields(cls)}
