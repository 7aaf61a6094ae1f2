"""Cluster set-up without MindSpore: HCCL rank tables (build, merge, check) for Ascend 910 servers."""
