"""STAND-IN until the `ingest` branch lands build_stages (this file is theirs; merge takes theirs)."""

from __future__ import annotations

from dataproc.config import PipelineConfig


def build_stages(cfg: PipelineConfig) -> list:
    from dataproc.stages.langid import LangIdStage

    return [LangIdStage(cfg.langid)]
