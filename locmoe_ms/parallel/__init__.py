"""Topology and (later) communicators and exchanges."""
