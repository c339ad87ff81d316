"""The family-agnostic trainer."""
