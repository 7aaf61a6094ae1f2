"""Cluster planning without MindSpore: FLOPs, the exchange's bytes at cluster scale, routing traces and the
step-time model of tools/cluster_model.py, the hardware files they read, and the paper's figures beside them.

May import: config, errors, paths, capacity, parallel (topology, exchange byte terms). Imported by experiments/
and the tools only.
"""
