"""Tests for the scaling-law harness (scaling/)."""
