"""Offline analysis of gradlog runs: polars + scipy (never torch)."""
