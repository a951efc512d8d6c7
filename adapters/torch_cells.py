"""Placeholder replaced by the torch RNN-cell adapters."""
