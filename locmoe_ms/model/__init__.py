"""The PanGu-Sigma-style sparse transformer built from nn.Cells: attention, blocks, the network and its loss.

May import: config, errors, layers, moe, parallel (topology, placement). Never train/ or anything above.
"""
