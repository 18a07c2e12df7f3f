"""Benchmarks: each module prints figures and a ratio measured in the same run."""
