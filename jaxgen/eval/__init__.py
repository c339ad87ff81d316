"""Evaluation helpers: sample grids and image metrics."""
