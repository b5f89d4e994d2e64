"""Scorers: one module per metric, listed in :mod:`harness.scorers.registry`."""
