"""planning/systems.py and cluster_model.py --paper: each system is the step model of its config, priced with the
exchange's byte functions and the FLOP counts; the per-change figures follow from them by hand."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from locmoe_ms.config import load_config
from locmoe_ms.planning import systems
from locmoe_ms.planning.flops import capacity_of
from locmoe_ms.planning.hardware import load_hardware
from locmoe_ms.planning.routing import read_trace, trace_routing
from locmoe_ms.planning.step_model import step_time

ROOT = Path(__file__).resolve().parents[2]
HW = load_hardware(None)


@pytest.fixture(scope="module")
def rows_64n():
    return {row.name.split(",")[0]: row for row in systems.compare(64, "hash", HW)}


def test_the_baseline_is_pangu_sigmas_exchange_priced_by_the_step_model(rows_64n):
    cfg = load_config(ROOT / "model_configs" / "pangu_sigma_64n.yaml",
                      ["moe_config.router=hash", "parallel_config.exchange=plain", "parallel_config.exchange_chunks=1",
                       "parallel_config.count_aware=false"])
    routing = trace_routing(read_trace(ROOT / "docs/results/traces/hash/metrics.jsonl"), cfg, capacity_of(cfg))
    assert rows_64n["hash (PanGu-Sigma)"].padded == step_time(cfg, routing, HW)


def test_each_change_moves_what_it_changes_by_hand(rows_64n):
    """64N: ep 8 (one expert-parallel rank per node, 2 experts each), mp 8, capacity 160, hidden 5120, float16.
    Plain: the slowest rank sends its 2 x 160 slots of 5120 columns to each of 7 other nodes, dispatch and combine;
    group-wise sends 1/8 of that; overlap and the router leave the padded bytes as they are; capacity factor 1.0
    gives 128 slots, and the expert FLOPs scale with the slots."""
    base, groupwise = rows_64n["hash (PanGu-Sigma)"].padded, rows_64n["group-wise exchange"].padded
    inter = 7 * 2 * (2 * 160) * 5120 * 2
    assert base.bytes_per_layer["all_to_all"]["inter_node"] == inter
    assert groupwise.bytes_per_layer["all_to_all"]["inter_node"] == inter / 8
    for name in ("overlap", "LocMoE router"):
        assert rows_64n[name].padded.bytes_per_layer == base.bytes_per_layer, name
    capacity = rows_64n["capacity factor 1"].padded
    assert capacity.expert_compute == pytest.approx(base.expert_compute * 128 / 160, rel=1e-12)
    assert capacity.bytes_per_layer["all_to_all"]["inter_node"] == inter * 128 / 160
    overlap = rows_64n["overlap"].padded
    # the same bytes in 4 messages per peer instead of 1: 3 more start-ups per peer (1 on the device, 7 on other
    # nodes), dispatch and combine, 3 passes (recompute), 16 micro-batches, 8 sparse layers
    more = 3 * 2 * (HW.latency[0] + 7 * HW.latency[2]) * 3 * 16 * 8
    assert overlap.all_to_all - base.all_to_all == pytest.approx(more, rel=1e-9)
    assert overlap.exchange_exposed < base.exchange_exposed and base.categories()["overlap"] == pytest.approx(0)
    for row in rows_64n.values():  # the paper's four categories add up to the step
        for b in (row.padded, row.count_aware):
            assert sum(b.categories().values()) == pytest.approx(b.step, rel=1e-12)


def test_all_four_is_every_override_together(rows_64n):
    together = systems.locmoe()
    assert set(together.overrides) == {o for v in systems.changes() for o in v.overrides}
    assert rows_64n["LocMoE"].padded == systems.price(64, together, "hash", HW)
    assert rows_64n["LocMoE"].padded.step < min(r.padded.step for r in rows_64n.values() if r.name != "LocMoE, all four")


def test_the_capacity_search_returns_the_speedup_it_priced():
    fit = systems.capacity_for_speedup(64, "hash", 1.15, HW)
    cfg = systems.variant_config(64, systems.locmoe(capacity_factor=fit.capacity_factor), "hash")
    assert fit.slots % 8 == 0 and capacity_of(cfg) == fit.slots and fit.full == 160
    base = systems.price(64, systems.Variant("", "hash"), "hash", HW).step
    priced = systems.price(64, systems.locmoe(capacity_factor=fit.capacity_factor), "hash", HW).step
    assert fit.speedup == pytest.approx(base / priced, rel=1e-12)


def test_paper_json_lists_every_cluster_and_baseline():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "cluster_model.py"), "--paper", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert sorted(out["rows"]) == sorted(f"{c}N/{b}" for c in (64, 128, 256) for b in ("hash", "switch"))
    assert [r["system"].split(",")[0] for r in out["rows"]["64N/hash"]] == [
        "hash (PanGu-Sigma)", "group-wise exchange", "overlap", "capacity factor 1", "LocMoE router", "LocMoE"]
    assert set(out["capacity"]) == {"64N/hash", "64N/switch"}
    assert out["capacity"]["64N/hash"]["paper_speedup"] == pytest.approx(1.15)
