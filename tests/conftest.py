"""MindSpore on CPU in GRAPH mode (the default users run), quiet logs, a small config factory."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("GLOG_v", "3")

import mindspore as ms  # noqa: E402
import pytest  # noqa: E402

from locmoe_ms.config import config_from_dict  # noqa: E402

ms.set_device("CPU")
ms.set_context(mode=ms.GRAPH_MODE)


def small_config(router: str = "locmoe", **sections):
    """A tiny valid config: 2 nodes x 2 devices, 4 experts, expert_parallel 4; sections override keys."""
    raw = {
        "model": {"hidden_size": 32, "num_heads": 2, "ffn_hidden_size": 64, "vocab_size": 200, "seq_length": 16,
                  "num_layers": 2, "sparse_layers": [1]},
        "moe_config": {"expert_num": 4, "router": router},
        "parallel_config": {"nodes": 2, "devices_per_node": 2, "data_parallel": 4, "expert_parallel": 4},
        "train": {"batch_size": 4, "warmup_steps": 0, "max_steps": 10},
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return config_from_dict(raw)


@pytest.fixture
def pynative():
    ms.set_context(mode=ms.PYNATIVE_MODE)
    yield
    ms.set_context(mode=ms.GRAPH_MODE)


def free_port() -> int:
    """A TCP port the kernel has just found free (msrun's master port in the multi-process tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the Ascend dry run (tools/ascend_dryrun.py): compiles for Ascend on this CPU with stand-in CANN libraries
ROOT = Path(__file__).resolve().parents[1]
MISSING = [t for t in ("gcc", "g++", "nm", "readelf") if shutil.which(t) is None]


@pytest.fixture(scope="session")
def cann_stub(tmp_path_factory) -> Path:
    """tools/make_cann_stub.sh, once per session."""
    out = tmp_path_factory.mktemp("cann_stub")
    subprocess.run(["bash", str(ROOT / "tools" / "make_cann_stub.sh"), str(out)], check=True, capture_output=True,
                   timeout=180, env={**os.environ, "PYTHON": sys.executable})
    return out


def dryrun(stub: Path, tmp: Path, *args: str, config: str = "model_configs/tiny_cpu.yaml", timeout: float = 240):
    """Run the tool; (exit code, stdout, the JSON evidence or None)."""
    out = tmp / "result.json"
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "ascend_dryrun.py"), config, *args, "--stub-dir",
                           str(stub), "--ir-dir", str(tmp / "ir"), "--json", str(out)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr, json.loads(out.read_text()) if out.is_file() else None


_CASES_DRIVER = r"""
import contextlib, io, json, runpy, sys, traceback
tool, results = sys.argv[1], []
for argv in json.loads(sys.argv[2]):
    err, code = io.StringIO(), 0
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        sys.argv = [tool, *argv]
        try:
            runpy.run_path(tool, run_name="__main__")
        except SystemExit as end:
            code = end.code if isinstance(end.code, int) else 0 if end.code is None else 1
            if not isinstance(end.code, (int, type(None))):
                print(end.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def tool_cases(tool: Path, cases: list[list], timeout: float = 600) -> list[subprocess.CompletedProcess]:
    """`python tool ARGS` for each argument list, run one after another in one process so MindSpore's import is
    paid once. Each case ends as a process of its own would (SystemExit's code; an uncaught exception's traceback
    and 1) and comes back as subprocess.run's result, with its stderr (stdout is dropped)."""
    argv = [[str(a) for a in case] for case in cases]
    run = subprocess.run([sys.executable, "-c", _CASES_DRIVER, str(tool), json.dumps(argv)],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert len(results) == len(argv), run.stderr[-3000:]
    return [subprocess.CompletedProcess([str(tool), *a], code, "", err) for a, (code, err) in zip(argv, results)]


# The longest test files (seconds of one 2-core run at 6a8a15d, --durations), started first so that the two
# xdist workers (--dist loadfile --no-loadscope-reorder, README's test command) finish together; by default xdist
# starts the files with the most tests, which left msrun files running alone at the end.
LONGEST_FIRST = ("parallel/test_distributed.py", "autoparallel/test_ascend_dryrun.py", "ckpt/test_auto_slices.py",
                 "train/test_train.py", "planning/test_cluster_model.py", "experiments/test_experiments.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        path = item.nodeid.split("::")[0].removeprefix("tests/")
        return LONGEST_FIRST.index(path) if path in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order inside each file is kept
