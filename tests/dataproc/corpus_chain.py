"""The demo's corpus steps, for real, on a few languages of the sample: pipeline -> dedup -> label
(rule-based judge, fastText classifiers, local runner) -> tokenize -> stage manifests.

Laid out as `q3 demo` lays out <data> (pipeline/, dedup/, labeling/, mix/), so the report plots
and the inspection notebook read exactly what the demo writes. Each step is idempotent (committed
outputs are reused), and the whole chain is kept once per machine under $Q3_DATA.
"""

from __future__ import annotations

from pathlib import Path

LANGS = ["deu_Latn", "eng_Latn", "cmn_Hans", "rus_Cyrl", "code_Python"]


def build_chain(sample_dir: Path, data: Path) -> Path:
    from dataproc import runner
    from dataproc.config import PipelineConfig
    from dataproc.dedup.config import DedupConfig
    from dataproc.jobs.dedup import run_dedup
    from dataproc.jobs.tokenise import run_tokenize
    from dataproc.mix.config import MixConfig
    from dataproc.mix.manifest import build_manifests
    from labeling.config import JudgeConfig, LabelConfig
    from labeling.demo import run_demo
    from q3.config import load_config

    if (data / "_DONE").exists():
        return data
    runner.run(PipelineConfig.model_validate({
        "input": [{"path": str(sample_dir / "raw" / lang), "format": "text", "source": "debian-manpages",
                    "lang_from_path": True} for lang in LANGS],
        "output": str(data / "pipeline"), "runner": "local"}))
    run_dedup(data / "pipeline" / "kept", data / "dedup", DedupConfig(runner="local"))
    run_demo(LabelConfig(input=str(data / "dedup" / "kept"), output=str(data / "labeling"),
                         judge=JudgeConfig(sample_size=120), runner="local"))
    mix = load_config(MixConfig, "mix", "demo", [f"input={data / 'labeling' / 'labeled' / 'docs'}",
                                                  f"output={data / 'mix'}", "runner=local", "buckets=2"])
    run_tokenize(mix)
    build_manifests(mix)
    (data / "_DONE").write_text("ok\n")
    return data
