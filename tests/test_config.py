"""Config loading: the shipped files validate; every bad value is one error naming the key, the value and the rule."""
import subprocess
import sys
from pathlib import Path

import pytest

from locmoe_ms.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
CHECK = [sys.executable, "-m", "locmoe_ms", "check-config"]  # locmoe-check-config from this checkout
BASE = ROOT / "model_configs" / "tiny_cpu.yaml"


def test_shipped_configs_load():
    for path in sorted((ROOT / "model_configs").glob("*.yaml")):
        load_config(path)


def test_base_config_is_overridden_by_the_child():
    cfg = load_config(ROOT / "model_configs" / "tiny_cpu_switch.yaml")
    assert cfg.moe_config.router == "switch" and cfg.moe_config.locality_loss_factor == 0.0
    assert cfg.model.hidden_size == load_config(BASE).model.hidden_size


# (override, text the message must contain: key, value, and what is allowed)
BAD = [
    ("model.hidden_size=abc", ["model.hidden_size", "'abc'", "must be an integer"]),
    ("model.hidden_size=-4", ["model.hidden_size", "-4", ">= 1"]),
    ("model.hidden_size=true", ["model.hidden_size", "True", "must be an integer"]),
    ("model.num_heads=3", ["model.hidden_size", "256", "divisible by model.num_heads (3)"]),
    ("model.hiden_size=128", ["model.hiden_size", "unknown key", "allowed: vocab_size"]),
    ("model.sparse_layers=[1, 9]", ["model.sparse_layers", "[1, 9]", "< model.num_layers (4)"]),
    ("model.sparse_layers=[1, 1]", ["model.sparse_layers", "[1, 1]", "unique"]),
    ("model.sparse_layers=3", ["model.sparse_layers", "3", "a list of an integer"]),
    ("model.activation=swish", ["model.activation", "'swish'", "one of gelu, gelu_tanh, fast_gelu, relu"]),
    ("model.dropout=1.0", ["model.dropout", "1.0", "< 1.0"]),
    ("moe_config.router=gshard", ["moe_config.router", "'gshard'", "one of locmoe, switch, hash, rre"]),
    ("moe_config.capacity_factor=0", ["moe_config.capacity_factor", "0", "> 0.0"]),
    ("moe_config.expert_num=512", ["moe_config.expert_num", "512", "expert_num <= model.hidden_size (256)"]),
    ("moe_config.expert_num=12", ["parallel_config.expert_parallel", "8", "divide moe_config.expert_num (12)"]),
    ("moe_config.rre_groups=3", ["moe_config.rre_groups", "3", "divide moe_config.expert_num (8)"]),
    ("moe_config.locality_eps=1.5", ["moe_config.locality_eps", "1.5", "< 1.0"]),
    ("train.learning_rate=.nan", ["train.learning_rate", "nan", "must be a number"]),
    ("train.mode=eager", ["train.mode", "'eager'", "one of graph, pynative"]),
    ("train.batch_size=6", ["train.batch_size", "6", "divisible by parallel_config.data_parallel (8)"]),
    ("parallel_config.data_parallel=3", ["parallel_config.data_parallel", "3", "must equal nodes * devices_per_node"]),
    ("parallel_config.communicator=nccl", ["parallel_config.communicator", "'nccl'", "one of local, cpu, hccl"]),
    ("data.corpus=files", ["data.paths", "[]", "at least one"]),
    ("optimizer.lr=1", ["optimizer", "unknown section", "allowed: model"]),
]


@pytest.mark.parametrize("override,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_value_names_key_value_and_rule(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(BASE, [override])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(BASE))
    for part in expected:
        assert part in message, (part, message)


@pytest.mark.parametrize("text,expected", [
    ("model: {hidden_size: 128\n", ["malformed YAML at line"]),
    ("- just\n- a list\n", ["top level", "must be a mapping"]),
    ("", ["the file is empty", "a mapping with sections model, moe_config"]),
    ("model: 5\n", ["model = 5", "must be a mapping"]),
    ("base: missing.yaml\n", ["missing.yaml: config file not found"]),
])
def test_bad_files(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    for part in expected:
        assert part in str(err.value), str(err.value)


def test_base_cycle_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")


def test_cli_prints_one_line_and_exits_2_without_traceback(tmp_path):
    out = subprocess.run([*CHECK, str(BASE), "--set", "moe_config.router=gshard"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "Traceback" not in out.stderr
    assert "moe_config.router = 'gshard'" in out.stderr
    good = subprocess.run([*CHECK, str(BASE)], capture_output=True, text=True,
                          timeout=120)
    assert good.returncode == 0 and "router: locmoe" in good.stdout


def test_exponent_without_decimal_point_is_a_number():
    """PyYAML reads 3e-4 as a string (YAML 1.1); a float field takes it as the number users mean."""
    cfg = load_config(str(ROOT / "model_configs" / "tiny_cpu.yaml"), ["train.learning_rate=3e-4",
                                                                       "train.min_learning_rate=1E-5"])
    assert cfg.train.learning_rate == 3e-4 and cfg.train.min_learning_rate == 1e-5
    with pytest.raises(ConfigError, match="model.hidden_size = '2e2': must be an integer"):
        load_config(str(ROOT / "model_configs" / "tiny_cpu.yaml"), ["model.hidden_size=2e2"])


# Configs that a launch used to reject only after start-up (Topology, the shard strategies, the exchange, the data
# pipeline); locmoe-check-config must reject each first, with the key, its value and the rule.
REJECTED_AT_LAUNCH = [
    (["parallel_config.mode=auto", "parallel_config.model_parallel=2", "parallel_config.data_parallel=4",
      "parallel_config.expert_parallel=4", "model.vocab_size=8193"],
     "model.vocab_size = 8193: in auto mode the vocabulary is split over parallel_config.model_parallel (2)"),
    (["parallel_config.optimizer_shard=true"],
     "parallel_config.optimizer_shard = true: needs parallel_config.mode auto (MindSpore's parallel optimizer)"),
    (["parallel_config.devices_per_node=3", "parallel_config.data_parallel=3", "parallel_config.expert_parallel=1",
      "parallel_config.model_parallel=2", "train.batch_size=6", "model.seq_length=128"],
     "parallel_config.model_parallel = 2: must divide devices_per_node (3)"),
    (["data.vocab_limit=0"], "model.vocab_size = 8192: smaller than the gpt2 tokenizer's vocabulary (50257)"),
    (["model.num_heads=3", "model.hidden_size=258", "parallel_config.model_parallel=2",
      "parallel_config.data_parallel=4", "parallel_config.expert_parallel=4"],
     "model.num_heads = 3: must be divisible by parallel_config.model_parallel (2)"),
    (["model.ffn_hidden_size=1025", "parallel_config.model_parallel=2", "parallel_config.data_parallel=4",
      "parallel_config.expert_parallel=4"], "model.ffn_hidden_size = 1025: must be divisible by"),
    (["parallel_config.expert_parallel=3"], "parallel_config.expert_parallel = 3: must divide moe_config.expert_num"),
    (["parallel_config.mode=auto", "parallel_config.model_parallel=2", "parallel_config.data_parallel=4",
      "parallel_config.expert_parallel=4", "moe_config.capacity_factor=1.22"],
     "in auto mode the capacity per token group and expert (79) must be a multiple of model_parallel (2)"),
]


@pytest.mark.parametrize("overrides,message", REJECTED_AT_LAUNCH, ids=[m[:40] for _, m in REJECTED_AT_LAUNCH])
def test_check_config_rejects_what_a_launch_rejects(overrides, message):
    args = [a for o in overrides for a in ("--set", o)]
    out = subprocess.run([*CHECK, str(BASE), *args], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and message in out.stderr, out.stderr


def test_tokenizer_vocabularies_are_the_real_ones():
    from locmoe_ms.config import TOKENIZER_VOCAB
    from locmoe_ms.data.tokenizer import build_tokenizer
    assert {name: build_tokenizer(name).vocab_size for name in TOKENIZER_VOCAB} == TOKENIZER_VOCAB


def test_explain_lists_every_key_with_its_rule():
    out = subprocess.run([*CHECK, "--explain"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    import dataclasses
    import typing
    from locmoe_ms.config import Config
    keys = [f"{section}.{f.name}" for section, cls in typing.get_type_hints(Config).items()
            for f in dataclasses.fields(cls)]
    assert [line.split(":")[0] for line in lines if not line.startswith(" ")] == keys
    assert "train.loss_scale: one of dynamic, fixed, none (default 'none'). dynamic: MindSpore's" in out.stdout
    assert "model.hidden_size: an integer >= 1 (default 256)" in out.stdout
