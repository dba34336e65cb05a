"""The demo report's corpus plots, drawn from what the real steps committed (pipeline, dedup,
labelling, tokenisation, manifests on a few languages of the sample), and the HTML report."""

import base64
import json
import struct

import pytest

from q3 import report_plots as rp
from q3.paths import data_dir
from tests.dataproc.corpus_chain import LANGS, build_chain


@pytest.fixture(scope="module")
def chain(sample_dir):
    return build_chain(sample_dir, data_dir() / "test-corpus-chain-v1")


@pytest.fixture(scope="module")
def pngs(chain, tmp_path_factory):
    return rp.corpus_plots(chain, tmp_path_factory.mktemp("plots"))


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_corpus_plots_from_committed_steps(chain, pngs):
    assert [p.name for p in pngs] == ["pipeline.png", "languages.png", "dedup.png", "labels.png", "stage_mix.png"]
    for p in pngs:
        w, h = _png_size(p)
        assert 800 <= w <= 2000 and 200 <= h <= 2000, (p.name, w, h)   # readable, not a stamp or a poster

    # the bars say what the files say
    stats = json.loads((chain / "pipeline" / "stats.json").read_text())
    ax = rp.fig_pipeline(stats).axes[0]
    assert [b.get_width() for b in ax.patches][::-1] == [stats["input_docs"]] + [s["out"] for s in stats["stages"]]
    docs, toks = rp.tokens_per_language(chain / "labeling" / "labeled" / "docs")
    assert set(docs) == set(LANGS) and all(toks[x] > docs[x] for x in LANGS)
    dist = json.loads((chain / "labeling" / "labeled" / "distributions.json").read_text())
    assert sum(docs.values()) == dist["docs"]
    cols = rp.label_columns(chain / "labeling" / "labeled" / "docs")
    assert {"edu_score", "domain", "safety"} <= set(cols) and len(cols["lang"]) == dist["docs"]


def test_missing_steps_are_skipped(chain, tmp_path):
    assert rp.corpus_plots(tmp_path / "nothing", tmp_path / "plots") == []
    only = tmp_path / "only-dedup" / "dedup"
    only.mkdir(parents=True)
    (only / "stats.json").write_text((chain / "dedup" / "stats.json").read_text())
    assert [p.name for p in rp.corpus_plots(only.parent, tmp_path / "p2")] == ["dedup.png"]


def test_html_report_embeds_table_and_images(pngs, tmp_path):
    rows = [("pipeline", "ingest -> filters", "ok", 12.5, "998 in, 814 kept"),
            ("s1", "pretrain <S1>", "FAILED (rc=1)", 3.0, "")]
    out = rp.html_report(rows, pngs, tmp_path / "REPORT.html", notes=["TensorBoard: tensorboard --logdir runs/demo"])
    page = out.read_text()
    assert page.count("data:image/png;base64,") == len(pngs) == 5
    first = page.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(first) == pngs[0].read_bytes()
    assert "998 in, 814 kept" in page and "pretrain &lt;S1&gt;" in page and '<tr class="fail">' in page
    md = rp.markdown_images(pngs, pngs[0].parent)
    assert "![documents kept and rejected per stage and reason](pipeline.png)" in md
