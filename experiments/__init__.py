"""Benchmarks and data loaders for xmr (never imported by the product code)."""
