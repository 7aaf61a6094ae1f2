"""Topology: the parallel groups as rank lists, expert placement, and the check against a launcher's rank table."""
import json

import pytest

from locmoe_ms.errors import UserInputError
from locmoe_ms.parallel.topology import Topology


def test_groups_for_two_nodes_of_two_devices_tp2_ep2():
    topo = Topology(nodes=2, devices_per_node=2, expert_num=4, model_parallel=2, expert_parallel=2)
    assert [topo.tensor_group(r) for r in range(4)] == [(0, 1), (0, 1), (2, 3), (2, 3)]
    assert [topo.expert_group(r) for r in range(4)] == [(0, 2), (1, 3), (0, 2), (1, 3)]
    assert [topo.data_group(r) for r in range(4)] == [(0, 2), (1, 3), (0, 2), (1, 3)]
    assert [topo.experts_of_rank(r) for r in range(4)] == [[0, 1], [0, 1], [2, 3], [2, 3]]
    assert topo.expert_replica_group(0) == (0, 1) and topo.expert_replica_group(3) == (2, 3)
    assert [topo.token_group_of_rank(r) for r in range(4)] == [0, 0, 1, 1]


def test_groups_with_expert_replicas_dp8_ep4():
    topo = Topology(nodes=2, devices_per_node=4, expert_num=8, model_parallel=1, expert_parallel=4)
    assert topo.expert_group(5) == (4, 5, 6, 7) and topo.expert_group(2) == (0, 1, 2, 3)
    assert topo.expert_replica_group(1) == (1, 5)  # expert block 1 lives once per node
    assert topo.data_group(3) == tuple(range(8))
    assert topo.experts_of_rank(6) == [4, 5]


def _table(path, servers, devices):
    path.write_text(json.dumps({"version": "1.0", "server_count": str(servers), "status": "completed", "server_list": [
        {"server_id": f"10.0.0.{s + 1}", "host_nic_ip": "reserve", "device": [
            {"device_id": str(d), "device_ip": f"192.168.{s}.{d + 1}", "rank_id": str(s * devices + d)}
            for d in range(devices)]} for s in range(servers)]}))
    return path


def test_rank_table_must_describe_the_configured_cluster(tmp_path):
    topo = Topology(nodes=2, devices_per_node=4, expert_num=8, expert_parallel=8)
    topo.check_rank_table(str(_table(tmp_path / "ok.json", 2, 4)))
    with pytest.raises(UserInputError) as err:
        topo.check_rank_table(str(_table(tmp_path / "bad.json", 1, 8)))
    assert str(err.value) == (f"RANK_TABLE_FILE {tmp_path / 'bad.json'}: 1 servers with [8] devices each; "
                              f"parallel_config asks for nodes = 2 with devices_per_node = 4")
