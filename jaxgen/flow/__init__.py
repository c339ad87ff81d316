"""Flow matching and Pyramidal Flow Matching (Jin et al. 2024)."""
