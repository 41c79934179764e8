"""Estimator facades, one per method."""
