"""`q3 data sample`: the real corpus from Debian manpages-* and Python's stdlib."""

from __future__ import annotations

import json

from dataproc.sample import SampleConfig, build_sample, lang_from_man_path, locale_to_lang
from q3.atomic import is_committed, read_marker


def test_sample_has_many_languages_and_code(sample_dir, docs_by_lang):
    assert is_committed(sample_dir)
    langs = set(docs_by_lang)
    for must in ("eng_Latn", "deu_Latn", "fra_Latn", "rus_Cyrl", "ukr_Cyrl", "jpn_Jpan", "cmn_Hans",
                 "srp_Cyrl", "por_Latn", "nob_Latn", "ell_Grek", "mkd_Cyrl", "code_Python"):
        assert must in langs, must
    assert len(langs) >= 22
    for lang, docs in docs_by_lang.items():
        assert 0 < len(docs) <= 40, lang
        for d in docs:
            assert set(d) == {"text", "url", "source", "lang_hint"}
            assert len(d["text"]) >= 300


def test_language_comes_from_the_install_path(docs_by_lang):
    for lang, docs in docs_by_lang.items():
        for d in docs:
            if lang == "code_Python":
                assert d["source"] == "python-stdlib" and d["url"].endswith(".py")
            else:
                path = d["url"].split(":", 2)[2]
                assert lang_from_man_path(path) == lang
    # The text really is in that language: a word that only occurs in its translation.
    assert any("BESCHREIBUNG" in d["text"] for d in docs_by_lang["deu_Latn"])
    assert any("DESCRIPTION" in d["text"] for d in docs_by_lang["eng_Latn"])
    assert any("描述" in d["text"] for d in docs_by_lang["cmn_Hans"])
    assert any("ОПИСАНИЕ" in d["text"] for d in docs_by_lang["rus_Cyrl"])
    assert any("def " in d["text"] for d in docs_by_lang["code_Python"])


def test_locale_mapping():
    assert lang_from_man_path("/usr/share/man/de/man1/ls.1.gz") == "deu_Latn"
    assert lang_from_man_path("/usr/share/man/man1/ls.1.gz") == "eng_Latn"
    assert lang_from_man_path("/usr/share/man/zh_TW/man1/ls.1.gz") == "cmn_Hant"
    assert lang_from_man_path("/usr/share/man/sr@latin/man1/ls.1.gz") == "srp_Latn"
    assert lang_from_man_path("/usr/share/man/pt_BR.UTF-8/man8/x.8.gz") == "por_Latn"
    assert locale_to_lang("nb") == "nob_Latn" and locale_to_lang("xx") is None


def test_raw_tree_matches_jsonl(sample_dir, sample_docs):
    raw = sorted((sample_dir / "raw").rglob("*.txt"))
    assert len(raw) == len(sample_docs)
    assert {p.parent.name for p in raw} == {d["lang_hint"] for d in sample_docs}
    texts = {d["text"] for d in sample_docs}
    assert raw[0].read_text(encoding="utf-8") in texts


def test_second_build_is_a_no_op_and_deterministic(sample_dir, tmp_path):
    before = (sample_dir / "docs.jsonl").stat().st_mtime_ns
    marker = read_marker(sample_dir)
    again = build_sample(SampleConfig(per_language=40, code_files=40, output=str(sample_dir)))
    assert again == sample_dir and (sample_dir / "docs.jsonl").stat().st_mtime_ns == before
    # A fresh build from the same cached packages gives byte-identical output.
    other = build_sample(SampleConfig(per_language=40, code_files=40, output=str(tmp_path / "s"),
                                      write_raw=False))
    assert (other / "docs.jsonl").read_bytes() == (sample_dir / "docs.jsonl").read_bytes()
    assert read_marker(other)["counts"] == marker["counts"]
    keys = [(d["lang_hint"], d["url"]) for d in map(json.loads, (other / "docs.jsonl").open())]
    assert keys == sorted(keys)


def test_cli_with_yaml_config_and_overrides(sample_dir, capsys):
    from dataproc.sample import cli

    assert cli("default", ["per_language=40", "code_files=40", f"output={sample_dir}"]) == 0
    out = capsys.readouterr().out
    assert "deu_Latn" in out and "TOTAL" in out
