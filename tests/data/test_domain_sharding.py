"""Domain-sharded batches (data.node_domains): each node's token groups read one domain; config errors are one line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from locmoe_ms.config import ConfigError, load_config
from locmoe_ms.data.corpus import DOMAINS, interleave, Document
from locmoe_ms.data.dataset import PackedSplit, eval_batches
from locmoe_ms.data.sharding import DomainBatchStream, row_domains
from locmoe_ms.errors import UserInputError

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "model_configs" / "tiny_cpu.yaml")
SHARDED = ["data.corpus=wiki_en+peoples_daily", "data.node_domains=[0, 1]"]


def _split(rows_per_domain=(30, 20), width=5):
    domains = np.concatenate([np.full(n, d, np.int32) for d, n in enumerate(rows_per_domain)])
    tokens = np.arange(len(domains) * width, dtype=np.int32).reshape(len(domains), width)  # each row unique
    return PackedSplit(tokens, domains)


def test_rows_of_each_nodes_token_groups_read_its_domain():
    # tiny_cpu: 2 nodes x 4 devices, data_parallel 8, batch 16: token group g holds rows 2g, 2g+1; groups 0-3 on node 0
    layout = row_domains(load_config(CONFIG, SHARDED))
    np.testing.assert_array_equal(layout, [0] * 8 + [1] * 8)
    # reversed, and with model parallel 2 (4 token groups of 4 rows, two per node)
    cfg = load_config(CONFIG, ["data.corpus=wiki_en+peoples_daily", "data.node_domains=[1, 0]",
                               "parallel_config.model_parallel=2", "parallel_config.data_parallel=4",
                               "parallel_config.expert_parallel=4"])
    np.testing.assert_array_equal(row_domains(cfg), [1] * 8 + [0] * 8)
    assert row_domains(load_config(CONFIG)) is None


def test_stream_fills_each_domains_rows_from_that_domain_once_per_epoch_and_resumes_exactly():
    split, layout = _split(), np.array([0, 0, 0, 1, 1, 0], np.int32)
    stream = DomainBatchStream(split, layout, seed=7)
    seen = {0: [], 1: []}
    for _ in range(10):  # domain 0: 4 rows per batch, 30 rows -> 7 batches per epoch; domain 1: 2 rows, 10 batches
        tokens, domains = stream.next()
        np.testing.assert_array_equal(domains, layout)
        for d in (0, 1):
            seen[d] += [int(t[0]) // 5 for t in tokens[layout == d]]
    assert len(set(seen[1])) == 20 and len(set(seen[0][:28])) == 28  # no row twice within an epoch
    assert all(split.domains[r] == d for d in (0, 1) for r in seen[d])
    saved = stream.state()
    after = [stream.next()[0] for _ in range(5)]
    again = DomainBatchStream(split, layout, seed=7)
    again.restore(saved)
    for a, b in zip(after, [again.next()[0] for _ in range(5)]):
        np.testing.assert_array_equal(a, b)


def test_eval_batches_follow_the_layout_in_order():
    split, layout = _split(), np.array([1, 0, 0, 1], np.int32)
    batches = list(eval_batches(split, 4, 100, layout))
    assert len(batches) == 10  # domain 1: 20 rows, 2 per batch
    tokens, domains = batches[1]
    np.testing.assert_array_equal(domains, layout)
    np.testing.assert_array_equal(tokens[:, 0] // 5, [32, 2, 3, 33])  # domain 0 rows 2, 3; domain 1 rows 30+2, 30+3


def test_a_domain_missing_from_the_split_is_one_line():
    with pytest.raises(UserInputError, match=r"data.node_domains: domain 1 \(peoples_daily\) has no sequence in the "
                                             r"train split"):
        DomainBatchStream(_split((30, 0)), np.array([0, 1], np.int32), seed=0)


def test_mixed_corpus_interleaves_so_max_documents_keeps_both_domains():
    a = [Document(f"a{i}", "x", 0) for i in range(3)]
    b = [Document(f"b{i}", "y", 1) for i in range(1)]
    assert [d.title for d in interleave(iter(a), iter(b))] == ["a0", "b0", "a1", "a2"]
    assert DOMAINS["wiki_en"] == 0 and DOMAINS["peoples_daily"] == 1


@pytest.mark.parametrize("overrides, message", [
    (["data.node_domains=[0, 1]"], "data.node_domains = [0, 1]: corpus 'wiki_en' has one domain; domain-sharded "
                                   "data needs several"),
    (["data.corpus=wiki_en+peoples_daily", "data.node_domains=[0]"],
     "data.node_domains = [0]: needs one domain id per node (parallel_config.nodes = 2)"),
    (["data.corpus=wiki_en+peoples_daily", "data.node_domains=[0, 2]"],
     "data.node_domains = [0, 2]: corpus 'wiki_en+peoples_daily' holds domains [0, 1] only"),
])
def test_config_errors_name_the_key_value_and_rule(overrides, message):
    with pytest.raises(ConfigError, match=None) as err:
        load_config(CONFIG, overrides)
    assert message in str(err.value)
    run = subprocess.run([sys.executable, "-m", "locmoe_ms", "check-config", CONFIG, "--quiet",
                          *[a for o in overrides for a in ("--set", o)]], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and message in run.stderr
