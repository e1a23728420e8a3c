"""Benchmarks of optorth. Each ``benchmarks/<name>.py`` runs from the repository root as
``python benchmarks/<name>.py``; the character-LM job lives in the package ``benchmarks.lm``."""
