"""Mesh construction, logical-axis sharding and multi-host helpers."""
