"""Scaling-law harness: sweeps, isoFLOP and parametric fits, reports."""
