"""Benchmarks of the exporter's hot path: ``python -m bench`` (see docs/performance.md)."""
