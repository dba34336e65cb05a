"""The corpus pipeline's stages, in order: normalise -> langid -> quality -> pii.

`build_stages(cfg)` builds each stage once from its config section (per process / Spark executor
worker); `dataproc.stage.chain(stages)` runs them over a batch. The langid stage lives in
dataproc/stages/langid.py and is imported lazily (it loads fastText).
"""

from __future__ import annotations

from dataproc.config import PipelineConfig
from dataproc.stage import Stage

ORDER = ("normalise", "langid", "quality", "pii")


def build_stages(cfg: PipelineConfig, only: list[str] | None = None) -> list[Stage]:
    """The pipeline's stages in order; `only` picks a subset (names from ORDER)."""
    wanted = [n for n in ORDER if only is None or n in only]
    stages: list[Stage] = []
    for name in wanted:
        if name == "normalise":
            from dataproc.stages.normalise import NormaliseStage
            stages.append(NormaliseStage(cfg.normalise))
        elif name == "langid":
            from dataproc.stages.langid import LangIdStage
            stages.append(LangIdStage(cfg.langid))
        elif name == "quality":
            from dataproc.stages.quality import QualityStage
            stages.append(QualityStage(cfg.quality))
        elif name == "pii" and cfg.pii.enabled:
            from dataproc.stages.pii import PiiStage
            stages.append(PiiStage(cfg.pii))
    return stages
