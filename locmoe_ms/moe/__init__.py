"""MoE routing: gates, routers, losses, capacity, dispatch/combine, experts and the MoE layer."""
