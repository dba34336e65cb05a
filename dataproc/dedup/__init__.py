"""Deduplication and decontamination: exact, MinHash-LSH fuzzy, line-level, n-gram decontam.

Pure per-batch functions (minhash, lsh, exact, lines, decontam) shared by the Spark job
(`dataproc.jobs.dedup`) and the local runner; docs/dedup.md explains the design.
"""

from dataproc.dedup.config import DecontamConfig, DedupConfig, LinesConfig, MinHashConfig

__all__ = ["DecontamConfig", "DedupConfig", "LinesConfig", "MinHashConfig"]
