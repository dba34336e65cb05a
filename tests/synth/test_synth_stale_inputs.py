"""Keyed commits (q3.commit) for `q3 synth run`: an unchanged rerun skips (says so, sends nothing,
writes nothing); changed seeds - even under the same seed ids - make it regenerate."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pyarrow.parquet as pq

from q3.config import load_config
from synth.engine import EngineConfig, run


def _write_seeds(path: Path, docs: list[dict]) -> None:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*")}


def test_synth_skips_unchanged_and_redoes_changed_seeds(seed_file, llm_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="q3.commit")
    picks = [json.loads(line) for line in seed_file.read_text(encoding="utf-8").splitlines()][:2]
    # explicit ids: the shard check on seed ids alone could not see a changed text
    docs = [{"id": f"seed-{i}", "text": d["text"], "lang": d["lang"], "source": d["source"]}
            for i, d in enumerate(picks)]
    seeds, out = tmp_path / "seeds.jsonl", tmp_path / "out"
    _write_seeds(seeds, docs)
    cfg = load_config(EngineConfig, "synth", "default", [
        f"input={seeds}", f"output={out}", f"endpoint.base_url={llm_server.base_url}", "endpoint.model=test-model",
        "endpoint.max_retries=1", "shard_size=1", "templates=[textbook]", "dedup=false"])
    first = run(cfg)
    assert first["kept"] == 2 and llm_server.total == 2

    llm_server.reset_counts()
    before = _tree(out)
    caplog.clear()
    t0 = time.perf_counter()
    again = run(cfg)
    seconds = time.perf_counter() - t0
    print(f"synth skip: {seconds:.3f}s")
    assert f"{out / 'final'} is up to date (same config and input); skipping" in caplog.text
    assert again["skipped"] and again["kept"] == first["kept"] and llm_server.total == 0
    assert _tree(out) == before and seconds < 10            # generous; measured ~0.05 s

    docs[1]["text"] = "Completely rewritten seed. " + docs[1]["text"]   # the upstream stage re-ran
    _write_seeds(seeds, docs)
    caplog.clear()
    redone = run(cfg)
    assert "recomputing (input changed)" in caplog.text
    # the changed seed's shard is regenerated (one new request); the unchanged one's reply is cached
    assert llm_server.total == 1 and redone["requests"] == 2 and redone["cache_hits"] == 1
    texts = pq.read_table(out / "final" / "data.parquet").column("text").to_pylist()
    assert any("Completely rewritten seed." in t for t in texts)


def _upstream(root: Path, docs: list[dict]) -> Path:
    """(Re-)commit an upstream stage as `q3 data decontam` commits it: kept/lang=*/ + rejected/."""
    import pyarrow as pa

    from q3.atomic import atomic_dir
    from q3.engine.schema import conform
    from q3.engine.write import write_split
    from q3.schemas import STAGE_OUTPUT_SCHEMA

    with atomic_dir(root, {"stage": "decontam"}) as tmp:
        write_split([conform(pa.Table.from_pylist(docs), STAGE_OUTPUT_SCHEMA)], tmp, n_in=len(docs))
    return root / "kept"


def _final_rows(out: Path) -> list[dict]:
    rows = pq.read_table(out / "final" / "data.parquet").to_pylist()
    for r in rows:
        r["provenance"].pop("cached")
    return rows


def test_synth_on_committed_upstream_redoes_when_upstream_reruns(seed_file, llm_server, tmp_path, caplog):
    """Seeds from a committed upstream output (the demo seeds synth from decontam's kept/): the key
    names the upstream commit, so re-running upstream - even on the same documents - recomputes
    (from the cache: nothing re-sent), and a changed document is generated anew."""
    from q3.schemas import content_id

    caplog.set_level(logging.INFO, logger="q3.commit")
    picks = [json.loads(line) for line in seed_file.read_text(encoding="utf-8").splitlines()][:3]
    docs = [{"id": content_id(d["text"]), "text": d["text"], "lang": d["lang"], "source": d["source"]}
            for d in picks]
    kept, out = _upstream(tmp_path / "decontam", docs), tmp_path / "out"
    cfg = load_config(EngineConfig, "synth", "default", [
        f"input={kept}", f"output={out}", f"endpoint.base_url={llm_server.base_url}", "endpoint.model=test-model",
        "endpoint.max_retries=1", "shard_size=1", "templates=[textbook]", "dedup=false"])
    first = run(cfg)
    assert first["requests"] == 3 and llm_server.total == 3 and first["runner"] == "local"
    rows = _final_rows(out)

    llm_server.reset_counts()
    t0 = time.perf_counter()
    again = run(cfg)
    print(f"synth skip on a committed upstream: {time.perf_counter() - t0:.3f}s")
    assert again["skipped"] and llm_server.total == 0

    _upstream(tmp_path / "decontam", docs)               # upstream re-ran: same documents, a new commit
    caplog.clear()
    rerun = run(cfg)
    assert "recomputing (input changed)" in caplog.text and not rerun.get("skipped")
    assert llm_server.total == 0 and rerun["cache_hits"] == rerun["requests"] == 3
    assert _final_rows(out) == rows

    new_text = "A rewritten seed about tide tables and harbour pilots. " + docs[1]["text"]
    docs[1] = dict(docs[1], id=content_id(new_text), text=new_text)
    _upstream(tmp_path / "decontam", docs)               # upstream re-ran on changed input
    changed = run(cfg)
    assert llm_server.total == 1 and changed["cache_hits"] == 2
    seeds = {r["provenance"]["seed_id"] for r in _final_rows(out)}
    assert seeds == {d["id"] for d in docs}
