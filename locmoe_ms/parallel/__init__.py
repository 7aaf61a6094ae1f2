"""The parallel substrate the model stands on: the cluster's topology and groups, the placement of token groups and
experts, the communicators (local, cpu, hccl), the expert exchange (explicit mode) and every parameter's split.

May import: config, errors, paths, capacity, cluster (rank tables). Never the layers, moe, model or anything above.
"""
