"""MoE routing: gates, routers, losses, dispatch/combine, experts, the MoE layer, and the critical capacity bound.

May import: config, errors, capacity, layers, parallel (placement, exchange). Never model/ or anything above.
"""
