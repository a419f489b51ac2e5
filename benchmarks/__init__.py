"""Reproducible performance measurements; each module is runnable (`python -m benchmarks.<name>`)."""
