"""Micro-benchmarks: one update, one kernel or one layer measured in isolation, each a
module run from the repository root as ``python -m benchmarks.micro.<name>`` (``--help``).
Speed and memory are ratios against a baseline timed in the same process."""
