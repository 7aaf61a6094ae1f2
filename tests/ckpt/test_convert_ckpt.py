"""tools/convert_ckpt.py on a real checkpoint (2 training steps): format, split/merge, inspect, upcycle, reroute,
and one-line refusals of bad input. The CLI runs as a subprocess; the round trips also run in-process."""
import importlib.util
import json
import random
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from locmoe_ms.ckpt import io, shards
from locmoe_ms.errors import UserInputError
from locmoe_ms.ckpt.fresh import is_router_parameter
from locmoe_ms.ckpt.summary import summarize
from locmoe_ms.ckpt.upcycle import upcycle
from locmoe_ms.model.network import build_model
from locmoe_ms.parallel.layout import is_expert_parameter
from locmoe_ms.train import checkpoint
from locmoe_ms.train.optim import build_optimizer
from locmoe_ms.train.step import TrainStep
from tests.conftest import small_config

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "convert_ckpt.py"


def _tool(*args, timeout=300):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def _ok(run):
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _run(capfd, subprocess_run, *args):
    """The tool as a subprocess, or through its main() in this process (cheaper: MindSpore is loaded already)."""
    if subprocess_run:
        return _ok(_tool(*args))
    code, err = _tool_main(capfd, args)
    assert code == 0, err[-3000:]


def _same_tensors(a: dict, b: dict, skip=()):
    assert set(a) - set(skip) == set(b) - set(skip)
    for name in set(a) - set(skip):
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert a[name].tobytes() == b[name].tobytes(), name


def _corpus(path: Path) -> Path:
    rng = random.Random(0)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    path.write_text("\n\n".join(" ".join(rng.choice(words) for _ in range(20)) for _ in range(300)))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A locmoe model (4 experts) after 2 real training steps with dynamic loss scaling, saved by locmoe-train."""
    from locmoe_ms.job import train
    root = tmp_path_factory.mktemp("trained")
    cfg = small_config(model={"vocab_size": 258},  # the byte tokenizer's 257 ids, even: tensor slices split it
                       data={"corpus": "files", "paths": [str(_corpus(root / "corpus.txt"))], "tokenizer": "byte"},
                       train={"max_steps": 2, "eval_every": 2, "save_every": 2, "eval_batches": 1,
                              "loss_scale": "dynamic"})  # the scaler's 0-d parameters go through every tool
    train(cfg, root / "run")
    return root / "run" / "checkpoints" / "step_00000002.ckpt"


def _random_checkpoint(cfg, directory: Path, step: int = 5) -> Path:
    """A checkpoint of `cfg` with every float tensor random (so that biases and moments are not zeros)."""
    ms.set_seed(0)
    net = build_model(cfg)
    cell = TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), cfg.train)
    rng = np.random.default_rng(1)
    for p in cell.get_parameters():
        if p.dtype == ms.float32 and p.name != "learning_rate":
            p.set_data(Tensor(rng.normal(0, 0.2, p.shape).astype(np.float32)))
    return checkpoint.save(cell, directory, step, {"data_epoch": 1, "data_index": 3,
                                                   "config_json": json.dumps(cfg.to_dict())}, keep=1)


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    cfg = small_config(model={"sparse_layers": []}, moe_config={"capacity_factor": 4.0})
    return _random_checkpoint(cfg, tmp_path_factory.mktemp("dense"))


# ---- format ----
def test_format_round_trips_bit_exact_with_metadata(trained, tmp_path):
    st, back = tmp_path / "a.safetensors", tmp_path / "b.ckpt"
    _ok(_tool("format", trained, "--to", "safetensors", "--output", st))
    _ok(_tool("format", st, "--to", "ckpt", "--output", back))
    again = io.convert(back, tmp_path / "c.safetensors", "safetensors")
    (p0, m0), (p1, m1), (p2, m2), (p3, m3) = (io.read(p) for p in (trained, st, back, again))
    assert isinstance(m0["config_json"], str) and isinstance(m0["step"], int) and isinstance(m0["data_index"], int)
    for params, meta in ((p1, m1), (p2, m2), (p3, m3)):
        _same_tensors(p0, params)
        assert meta == m0 and all(type(meta[k]) is type(m0[k]) for k in m0)
    raw = ms.load_checkpoint(str(st), format="safetensors", crc_check=True)  # MindSpore reads it on its own
    stored = raw[io.STRING_PREFIX + "config_json"].asnumpy().tobytes().decode()
    assert json.loads(stored) == json.loads(m0["config_json"])
    assert not list(tmp_path.glob(".tmp_*"))


# ---- split / merge ----
@pytest.mark.parametrize("k,t,world,whole", [(1, 1, None, False), (2, 1, None, False), (4, 1, None, False),
                                             (2, 2, None, False), (4, 2, 8, False), (2, 2, 8, True)])
def test_split_then_merge_is_bit_exact(trained, tmp_path, k, t, world, whole):
    params, meta = io.read(trained)
    files = shards.split(trained, tmp_path / "run", k, t, world, whole)
    w = world or k * t
    assert files == [tmp_path / "run" / f"rank_{r}" / "checkpoints" / "step_00000002.ckpt" for r in range(w)]
    for r, path in enumerate(files):
        part, pmeta = io.read(path)
        assert (pmeta["rank"], pmeta["world_size"]) == (r, w)
        assert (pmeta["expert_parallel_rank"], pmeta["model_parallel_rank"]) == ((r // t) % k, r % t)
        par = json.loads(pmeta["config_json"])["parallel_config"]
        assert (par["expert_parallel"], par["model_parallel"], par["data_parallel"]) == (k, t, w // t)
        assert part["network.blocks.1.moe.experts.w_in"].shape == (4 // k, 32, 64 if whole else 64 // t)
        assert part["adam_v.network.blocks.1.moe.experts.w_out"].shape == (4 // k, 64 if whole else 64 // t, 32)
        for name in ("key", "value"):
            assert part[f"network.blocks.0.attention.{name}.weight"].shape == (32, 32 if whole else 32 // t)
        block = pmeta["expert_parallel_rank"] * (4 // k)
        np.testing.assert_array_equal(part["network.blocks.1.moe.experts.b_out"],
                                      params["network.blocks.1.moe.experts.b_out"][block:block + 4 // k])
    merged, mmeta = shards.merge(files)
    _same_tensors(params, merged)
    assert {k_: v for k_, v in mmeta.items() if k_ != "config_json"} == \
        {k_: v for k_, v in meta.items() if k_ != "config_json"}
    assert json.loads(mmeta["config_json"])["parallel_config"]["expert_parallel"] == k


def test_split_merge_eight_experts_eight_ranks(tmp_path):
    cfg = small_config(moe_config={"expert_num": 8}, train={"batch_size": 8},
                       parallel_config={"nodes": 2, "devices_per_node": 4, "data_parallel": 8, "expert_parallel": 8})
    full = _random_checkpoint(cfg, tmp_path / "full")
    files = shards.split(full, tmp_path / "run", 8)
    assert io.read(files[5])[0]["network.blocks.1.moe.experts.w_in"].shape == (1, 32, 64)
    _same_tensors(io.read(full)[0], shards.merge(files)[0])


def test_split_and_merge_cli_with_rank_directories(trained, tmp_path):
    _ok(_tool("split", trained, "--expert-parallel", "2", "--model-parallel", "2", "--output", tmp_path / "run"))
    ranks = sorted((tmp_path / "run").glob("rank_*"))
    assert len(ranks) == 4
    _ok(_tool("merge", *ranks, "--output", tmp_path / "full.ckpt"))
    _same_tensors(io.read(trained)[0], io.read(tmp_path / "full.ckpt")[0])
    shard = summarize(ranks[3] / "checkpoints" / "step_00000002.ckpt")
    assert shard["shard"] == {"rank": 3, "world_size": 4, "expert_parallel_rank": 1, "model_parallel_rank": 1}
    assert shard["experts_held"] == 2


def test_resume_refuses_a_shard_of_another_rank(trained, tmp_path):
    """A rank shard placed where a one-process run resumes is refused in one line, not loaded as if it were whole."""
    from locmoe_ms.job import train
    _ok(_tool("split", trained, "--expert-parallel", "2", "--world", "2", "--output", tmp_path / "ranks"))
    run = tmp_path / "one"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "ranks" / "rank_1" / "checkpoints" / "step_00000002.ckpt", run / "checkpoints")
    cfg = io.config_of(trained, io.read(trained)[1])
    with pytest.raises(UserInputError, match=r"step_00000002.ckpt: saved by rank 1, read by one process emulating "
                                             r"4 devices; merge, split or reshard it with tools/convert_ckpt.py"):
        train(cfg, run, resume=True)


# ---- inspect ----
def test_inspect_text_and_json(trained):
    params, _ = io.read(trained)
    model = sum(a.size for n, a in params.items() if n.startswith("network."))
    per_expert = sum(a.size // 4 for n, a in params.items() if n.startswith("network.") and is_expert_parameter(n))
    text = _ok(_tool("inspect", trained)).stdout
    assert "step        2" in text and "locmoe, 4 experts, sparse layers [1]" in text
    assert f"{model:,} in the model" in text and f"4 held x {per_expert:,} per expert" in text
    assert "network.blocks.1.moe.experts.w_in" in text and "(4, 32, 64)" in text and "float32" in text
    info = json.loads(_ok(_tool("inspect", trained, "--json")).stdout)
    assert (info["step"], info["router"], info["expert_num"], info["sparse_layers"]) == (2, "locmoe", 4, [1])
    assert (info["model_parameters"], info["parameters_per_expert"], info["experts_held"]) == (model, per_expert, 4)
    assert info["expert_parameters"] == 4 * per_expert and info["optimizer_state"] is True and info["shard"] is None
    assert info["metadata"]["step"] == 2 and "valid_ppl" in info["metadata"]
    tensors = {t["name"]: t for t in info["tensors"]}
    assert set(tensors) == set(params)
    assert tensors["network.blocks.1.moe.router.gate.bias"] == {"name": "network.blocks.1.moe.router.gate.bias",
                                                                 "shape": [4], "dtype": "float32"}


# ---- upcycle ----
def _load(cfg, params):
    net = build_model(cfg)
    ms.load_param_into_net(net, {n: ms.Parameter(Tensor(a), name=n) for n, a in params.items()}, strict_load=True)
    return net


def _batch(cfg, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, cfg.model.vocab_size, (cfg.train.batch_size, cfg.model.seq_length)).astype(np.int32)
    return Tensor(tokens), Tensor(np.arange(cfg.train.batch_size, dtype=np.int32) % 2)


@pytest.mark.parametrize("router,layers,as_subprocess", [("hash", None, True), ("rre", "0,1", False)])
def test_upcycled_fixed_router_model_equals_the_dense_model(dense, tmp_path, pynative, capfd, router, layers,
                                                             as_subprocess):
    out = tmp_path / "moe.ckpt"
    extra = ["--sparse-layers", layers] if layers else []
    _run(capfd, as_subprocess, "upcycle", dense, "--experts", "4", "--router", router, *extra, "--output", out)
    params, meta = io.read(out)
    cfg = io.config_of(out, meta)
    assert meta["step"] == 0 and cfg.moe_config.router == router and cfg.moe_config.expert_num == 4
    assert cfg.model.sparse_layers == ([0, 1] if layers else [1])
    assert all(n.startswith("network.") for n in params)  # model only, no optimizer state
    dense_params, dense_meta = io.read(dense)
    dense_cfg = io.config_of(dense, dense_meta)
    inputs = _batch(cfg)
    expected = _load(dense_cfg, {n: a for n, a in dense_params.items() if n.startswith("network.")}).network(*inputs)
    got = _load(cfg, params).network(*inputs)
    assert float(got[4].asnumpy().max()) == 0.0  # nothing dropped
    np.testing.assert_allclose(got[0].asnumpy(), expected[0].asnumpy(), rtol=0, atol=1e-5)


@pytest.mark.parametrize("router", ["locmoe", "switch"])
def test_upcycled_learned_router_scales_the_dense_ffn_by_its_probability(dense, pynative, router):
    params, meta = upcycle(dense, 4, router)
    cfg = io.config_of(dense, meta)
    dense_params, dense_meta = io.read(dense)
    for e in range(4):
        np.testing.assert_array_equal(params["network.blocks.1.moe.experts.w_in"][e],
                                      dense_params["network.blocks.1.ffn.w_in.weight"])
    np.testing.assert_array_equal(params["network.blocks.1.ln_moe.gamma"],
                                  dense_params["network.blocks.1.ln_ffn.gamma"])
    moe = _load(cfg, params).network.blocks[1].moe
    ffn = _load(io.config_of(dense, dense_meta), {n: a for n, a in dense_params.items()
                                                  if n.startswith("network.")}).network.blocks[1].ffn
    tokens = cfg.train.batch_size * cfg.model.seq_length
    rng = np.random.default_rng(2)
    x = Tensor(rng.normal(0, 1, (tokens, cfg.model.hidden_size)).astype(np.float32))
    ids = Tensor(rng.integers(0, cfg.model.vocab_size, tokens).astype(np.int32))
    domains = Tensor(np.zeros(tokens, np.int32))
    score = moe.router(x, ids, domains)[1].asnumpy()
    y = moe(x, ids, domains)[0].asnumpy()
    assert 0 < score.min() < 1
    np.testing.assert_allclose(y, ffn(x).asnumpy() * score[:, None], rtol=0, atol=1e-5)


# ---- reroute ----
@pytest.mark.parametrize("router,as_subprocess", [("switch", True), ("hash", False)])
def test_reroute_keeps_experts_bit_exact_and_the_model_trains(trained, tmp_path, pynative, capfd, router,
                                                              as_subprocess):
    out = tmp_path / "rerouted.ckpt"
    _run(capfd, as_subprocess, "reroute", trained, "--router", router, "--output", out)
    before, meta0 = io.read(trained)
    after, meta = io.read(out)
    cfg = io.config_of(out, meta)
    assert cfg.moe_config.router == router and meta["step"] == meta0["step"] and "valid_ppl" not in meta
    kept = [n for n in before if not is_router_parameter(n)]
    _same_tensors({n: before[n] for n in kept}, {n: after[n] for n in kept})
    assert any(is_expert_parameter(n) for n in kept)
    new = sorted(n for n in after if is_router_parameter(n))
    if router == "switch":
        assert new == [f"{m}network.blocks.1.moe.router.gate.weight" for m in ("adam_m.", "adam_v.", "")]
        assert after["network.blocks.1.moe.router.gate.weight"].shape == (32, 4)
        assert not after["adam_m.network.blocks.1.moe.router.gate.weight"].any()
    else:
        assert new == []
    cfg.train.max_steps = 5  # the run ended at step 2; continue it as `--resume --max-steps 5` would
    net = build_model(cfg)
    cell = TrainStep(net, build_optimizer(net.trainable_params(), cfg.train), cfg.train)
    loaded, _ = checkpoint.load(out)
    checkpoint.restore(cell, loaded, out)  # every parameter and moment present with its shape
    tokens = np.random.default_rng(0).integers(0, 257, (4, 17)).astype(np.int32)
    losses = [float(cell(Tensor(tokens), Tensor(np.zeros(4, np.int32)))[0].asnumpy()) for _ in range(3)]
    assert losses[2] < losses[0] - 1e-3, losses  # two updates on one batch lower its loss


# ---- help and bad input ----
def test_every_command_has_help():
    for command, text in [("inspect", "per expert"), ("format", "bit-identical"), ("merge", "replicas"),
                          ("split", "--resume"), ("upcycle", "router probability"), ("reroute", "bit-exact")]:
        run = _ok(_tool(command, "--help"))
        assert text in " ".join(run.stdout.split()), command


def _bad_cases(d: Path, trained: Path, dense: Path) -> dict:
    """name -> (arguments, parts of the one error line, a path that must not exist afterwards)."""
    data = trained.read_bytes()
    (d / "truncated.ckpt").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    (d / "flipped.ckpt").write_bytes(bytes(flipped))
    (d / "notes.ckpt").write_text("not a checkpoint\n")
    (d / "notes.txt").write_text("not a checkpoint\n")
    shards.split(trained, d / "a", 4)
    params, meta = io.read(trained)
    io.write(d / "step3.ckpt", params, {**meta, "step": 3})
    shards.split(d / "step3.ckpt", d / "b", 4)
    files = shards.split(trained, d / "replicas", 2, 2, world=8)  # ranks 1 and 5: expert block 0, slice 1
    part, pmeta = io.read(files[5])
    part["network.blocks.1.moe.experts.w_in"][0, 0, 0] += 1.0
    io.write(files[5], part, pmeta)
    out, st = d / "out.ckpt", d / "o.safetensors"
    a = [d / "a" / f"rank_{r}" for r in range(4)]
    return {
        "missing file": (["format", d / "nope.ckpt", "--to", "safetensors", "--output", st], ["nope.ckpt", "not found"],
                         st),
        "truncated": (["format", d / "truncated.ckpt", "--to", "safetensors", "--output", st],
                      ["truncated.ckpt", "corrupted"], st),
        "crc mismatch": (["inspect", d / "flipped.ckpt"], ["flipped.ckpt", "corrupted"], None),
        "crc mismatch split": (["split", d / "flipped.ckpt", "--expert-parallel", "2", "--output", d / "s"],
                               ["flipped.ckpt", "corrupted"], d / "s"),
        "router name": (["reroute", trained, "--router", "gshard", "--output", out], ["--router", "gshard"], out),
        "same router": (["reroute", trained, "--router", "locmoe", "--output", out], ["already uses"], out),
        "K not dividing": (["split", trained, "--expert-parallel", "3", "--output", d / "s"],
                           ["--expert-parallel 3", "expert_num (4)"], d / "s"),
        "T not dividing": (["split", trained, "--expert-parallel", "2", "--model-parallel", "3", "--output", d / "s"],
                           ["--model-parallel 3", "num_heads"], d / "s"),
        "world": (["split", trained, "--expert-parallel", "2", "--world", "3", "--output", d / "s"],
                  ["--world 3", "multiple"], d / "s"),
        "different steps": (["merge", a[0], a[1], d / "b" / "rank_2", d / "b" / "rank_3", "--output", out],
                            ["different steps", "--step"], out),
        "missing rank": (["merge", *a[:3], "--output", out], ["rank 3", "missing"], out),
        "duplicate rank": (["merge", a[0], a[0], a[1], a[2], "--output", out], ["rank 0 given twice"], out),
        "replicas differ": (["merge", *sorted((d / "replicas").glob("rank_*")), "--output", out],
                            ["ranks 1 and 5", "experts.w_in", "bit-identical"], out),
        "not a shard": (["merge", trained, "--output", out], ["not a per-rank shard"], out),
        "step missing": (["merge", *a, "--step", "7", "--output", out], ["step_00000007.ckpt"], out),
        "output is input": (["format", trained, "--to", "ckpt", "--output", trained], ["is the input"], None),
        "output is input merge": (["merge", *[p / "checkpoints" / "step_00000002.ckpt" for p in a], "--output",
                                   a[2] / "checkpoints" / "step_00000002.ckpt"], ["is the input"], None),
        "non-checkpoint": (["format", d / "notes.ckpt", "--to", "safetensors", "--output", st],
                           ["notes.ckpt", "corrupted"], st),
        "non-checkpoint name": (["format", d / "notes.txt", "--to", "ckpt", "--output", out],
                                ["notes.txt", ".ckpt or .safetensors"], out),
        "suffix against --to": (["format", trained, "--to", "safetensors", "--output", out], [".safetensors"], out),
        "upcycle sparse": (["upcycle", trained, "--experts", "4", "--router", "hash", "--output", out],
                           ["not a dense model"], out),
        "upcycle layers": (["upcycle", dense, "--experts", "4", "--router", "hash", "--sparse-layers", "1,x",
                            "--output", out], ["--sparse-layers"], out),
        "upcycle experts": (["upcycle", dense, "--experts", "3", "--router", "hash", "--output", out],
                            ["upcycled config is invalid", "expert_parallel"], out),
    }


# run as subprocesses (the others run through the tool's main() in this process, to keep the file fast)
SUBPROCESS = ["missing file", "truncated", "crc mismatch", "router name", "K not dividing", "different steps",
              "replicas differ", "output is input", "output is input merge", "non-checkpoint name",
              "suffix against --to", "upcycle layers"]
IN_PROCESS = ["crc mismatch split", "same router", "T not dividing", "world", "missing rank", "duplicate rank",
              "not a shard", "step missing", "non-checkpoint", "upcycle sparse", "upcycle experts"]


@pytest.fixture(scope="module")
def bad_cases(trained, dense, tmp_path_factory):
    cases = _bad_cases(tmp_path_factory.mktemp("bad"), trained, dense)
    assert set(cases) == set(SUBPROCESS) | set(IN_PROCESS)
    return cases


@pytest.fixture(scope="module")
def bad_runs(bad_cases):
    """The subprocess cases, run concurrently: name -> (return code, stderr)."""
    with ThreadPoolExecutor(max_workers=3) as pool:
        runs = pool.map(lambda name: _tool(*bad_cases[name][0]), SUBPROCESS)
    return {name: (run.returncode, run.stderr) for name, run in zip(SUBPROCESS, runs)}


def _tool_main(capfd, args):
    spec = importlib.util.spec_from_file_location("convert_ckpt", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    capfd.readouterr()
    try:
        code = tool.main([str(a) for a in args])
    except SystemExit as stop:
        code = stop.code
    return code, capfd.readouterr().err


def _assert_refused(code, stderr, parts, never, trained):
    assert code == 2, (code, stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr[-3000:]
    for part in parts:
        assert part in lines[0], lines[0]
    assert never is None or not Path(never).exists()
    assert not list(Path(trained).parent.glob(".tmp_*"))


@pytest.mark.parametrize("case", SUBPROCESS)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(bad_cases, bad_runs, trained, case):
    _assert_refused(*bad_runs[case], *bad_cases[case][1:], trained)


@pytest.mark.parametrize("case", IN_PROCESS)
def test_bad_input_in_process(bad_cases, trained, capfd, case):
    args, parts, never = bad_cases[case]
    _assert_refused(*_tool_main(capfd, args), parts, never, trained)
