"""Benchmarks; a package so that worker processes can ``--import bench.noop_jobs``."""
