"""Cluster set-up without MindSpore: HCCL rank tables (build, merge, check, exchange between servers) for Ascend
910 servers, which the launchers and parallel/topology.py stand on.

May import: errors, paths. The step-time model is planning/, above the exchange.
"""
