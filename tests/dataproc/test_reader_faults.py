"""Issue 13 part 2: no row is lost when a reader meets a bad record or a cut file.

Every format is cut at every byte offset and read directly (no Spark). What a cut file holds:
- every record wholly before the cut (for gz/zst: wholly inside what decompresses) is one row,
  kept or rejected exactly as in the uncut file, in order;
- the partial record at the cut is exactly one `truncated_*` row, last, at its position
  (`path#n` = the n-th line / record); a cut between records (a plain file at a line or record
  end, a compressed file at a member/frame end) is a shorter valid file: no truncated row;
- Parquet keeps its footer at the end: a cut file is one `truncated_parquet` row;
- a cut at offset 0 is an empty file: one `empty_file` row;
- nothing raises.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from lid_corpus import TEXTS

from dataproc import runner
from dataproc.config import InputSpec, PipelineConfig
from dataproc.readers import list_inputs, read_file
from q3.schemas import STAGE_OUTPUT_SCHEMA

DOCS = ["Plain ASCII document one.", "Zweites Dokument mit Umlauten: äöü ß.", "第三个文档，中文。",
        "Fourth, with a \"quote\" and a \\ backslash.", "Пятый документ.", "Sixth and last."]
# good lines around one of each kind of bad line, as in the uncut file they give these reasons
LINES = [json.dumps({"text": DOCS[0]}, ensure_ascii=False), '{"text": "unterminated',
         json.dumps({"text": DOCS[1]}, ensure_ascii=False), "[1, 2, 3]", '{"no_text": 1}',
         json.dumps({"text": DOCS[2]}, ensure_ascii=False), "", json.dumps({"text": DOCS[3]}),
         json.dumps({"text": DOCS[4]}, ensure_ascii=False), json.dumps({"text": DOCS[5]})]
JSONL = "".join(line + "\n" for line in LINES).encode()


def read(path: Path) -> list[dict]:
    batches = list(read_file(str(path), InputSpec(path=str(path))))   # must not raise
    for b in batches:
        assert b.schema == STAGE_OUTPUT_SCHEMA
    return pa.Table.from_batches(batches, schema=STAGE_OUTPUT_SCHEMA).to_pylist()


def summary(rows: list[dict]) -> list[tuple]:
    return [(r["reason"], r["text"] if r["reason"] is None else r["url"].rsplit("#", 1)[-1]) for r in rows]


def line_rows(data: bytes, full: list[dict]) -> list[tuple]:
    """What the complete lines of `data` (a prefix of JSONL) give: the uncut file's rows for them."""
    n_lines = data.count(b"\n")
    return [s for s, r in zip(summary(full), full, strict=True) if int(r["url"].rsplit("#", 1)[1]) <= n_lines]


def check_cut(rows: list[dict], expect: list[tuple], truncated: str | None, at: int, cut: int) -> None:
    got = summary(rows)
    if truncated is None:
        assert got == expect, cut
    else:
        assert got[:-1] == expect, cut
        assert got[-1] == (truncated, str(at)), cut
        assert rows[-1]["stage"] == "read" and rows[-1]["detail"], cut


def test_bad_lines_are_rows_and_the_rest_is_kept(tmp_path):
    p = tmp_path / "x.jsonl"
    deep = '{"text": ' + "[" * 100_000 + "\n"          # RecursionError in json: was the whole file
    p.write_bytes(b"".join((json.dumps({"text": f"good {i}"}) + "\n").encode() for i in range(5))
                  + deep.encode() + b"".join((json.dumps({"text": f"good {i}"}) + "\n").encode() for i in range(5, 10)))
    rows = read(p)
    assert [r["text"] for r in rows if r["reason"] is None] == [f"good {i}" for i in range(10)]
    bad = [r for r in rows if r["reason"]]
    assert len(rows) == 11 and len(bad) == 1
    assert bad[0]["reason"] == "malformed_json" and bad[0]["url"] == f"{p}#6" and "deep" in bad[0]["detail"]
    full = read(_write(tmp_path / "f.jsonl", JSONL))
    assert [r["reason"] for r in full] == [None, "malformed_json", None, "malformed_json", "missing_text",
                                           None, None, None, None]


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def test_plain_jsonl_cut_at_every_offset(tmp_path):
    p = tmp_path / "c.jsonl"
    full = read(_write(p, JSONL))
    counts = {"clean": 0, "truncated": 0}
    for cut in range(1, len(JSONL) + 1):
        data = JSONL[:cut]
        rows = read(_write(p, data))
        expect = line_rows(data, full)
        tail = data[data.rfind(b"\n") + 1:]
        n = data.count(b"\n") + 1
        truncated = None
        if tail:
            try:
                json.loads(tail)      # a last line complete but for its newline is a record
                expect = expect + [s for s, r in zip(summary(full), full, strict=True) if r["url"].endswith(f"#{n}")]
            except ValueError:
                truncated = "truncated_jsonl"
        check_cut(rows, expect, truncated, n, cut)
        counts["truncated" if truncated else "clean"] += 1
    assert counts["truncated"] > len(JSONL) * 0.8 and counts["clean"] >= len(LINES)
    assert [r["reason"] for r in read(_write(p, b""))] == ["empty_file"]


def _members(parts: list[bytes], comp: str) -> list[bytes]:
    if comp == "gz":
        return [gzip.compress(x, mtime=0) for x in parts]
    return [zstandard.ZstdCompressor().compress(x) for x in parts]


def _decompressed_prefix(members: list[bytes], cut: int, comp: str) -> tuple[bytes, bool]:
    """(what the first `cut` bytes decompress to, whether the cut is at a member/frame end)."""
    out, start = b"", 0
    for m in members:
        if cut >= start + len(m):
            out += gzip.decompress(m) if comp == "gz" else zstandard.ZstdDecompressor().decompress(m)
            start += len(m)
            continue
        part = m[: cut - start]
        if part:
            d = zlib.decompressobj(wbits=31) if comp == "gz" else zstandard.ZstdDecompressor().decompressobj()
            out += d.decompress(part)
        return out, not part
    return out, True


@pytest.mark.parametrize("comp", ["gz", "zst"])
def test_compressed_jsonl_cut_at_every_offset(tmp_path, comp):
    split = JSONL.index(b"\n", len(JSONL) // 2) + 1      # two members/frames, a line boundary between
    members = _members([JSONL[:split], JSONL[split:]], comp)
    blob = b"".join(members)
    p = tmp_path / f"c.jsonl.{comp}"
    full = read(_write(p, blob))
    assert summary(full) == summary(read(_write(tmp_path / "f.jsonl", JSONL)))   # same rows as plain
    reason = {"gz": "truncated_gzip", "zst": "truncated_zstd"}[comp]
    n_trunc = 0
    for cut in range(1, len(blob) + 1):
        data, clean = _decompressed_prefix(members, cut, comp)
        rows = read(_write(p, blob[:cut]))
        check_cut(rows, line_rows(data, full), None if clean else reason, data.count(b"\n") + 1, cut)
        if not clean:
            # the partial line that did decompress is in the truncated row, not lost or split off
            assert (rows[-1]["text"] or "") == data[data.rfind(b"\n") + 1:].decode("utf-8", "replace"), cut
            n_trunc += 1
    assert n_trunc == len(blob) - 2


def _warc_records(gz: bool) -> list[bytes]:
    """One record per buffer (a .warc.gz has one gzip member per record): controls, documents,
    a non-text response."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    def one(make) -> bytes:
        buf = io.BytesIO()
        w = WARCWriter(buf, gzip=gz)
        w.write_record(make(w))
        return buf.getvalue()

    html = f"<html><body><p>{DOCS[1]}</p></body></html>".encode()
    http = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
    png = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
    req = StatusAndHeaders("GET / HTTP/1.1", [("Host", "e.org")], is_http_request=True)
    return [
        one(lambda w: w.create_warcinfo_record("c.warc", {"software": "q3-test"})),
        one(lambda w: w.create_warc_record("https://e.org/0", "request", payload=io.BytesIO(b""), http_headers=req)),
        one(lambda w: w.create_warc_record("https://e.org/0", "response", payload=io.BytesIO(html), http_headers=http)),
        one(lambda w: w.create_warc_record("https://e.org/i.png", "response", payload=io.BytesIO(b"\x89PNG"),
                                           http_headers=png)),
        one(lambda w: w.create_warc_record("https://e.org/2", "resource", payload=io.BytesIO(DOCS[2].encode()),
                                           warc_content_type="text/plain")),
        one(lambda w: w.create_warc_record("https://e.org/3", "conversion", payload=io.BytesIO(DOCS[4].encode()),
                                           warc_content_type="text/plain")),
    ]


@pytest.mark.parametrize("gz", [False, True])
def test_warc_cut_at_every_offset(tmp_path, gz):
    records = _warc_records(gz)
    blob = b"".join(records)
    plain = [gzip.decompress(r) for r in records] if gz else records
    ends = [sum(len(r) for r in plain[: i + 1]) - 4 for i in range(len(plain))]   # content end, before CRLFCRLF
    p = tmp_path / ("c.warc.gz" if gz else "c.warc")
    full = read(_write(p, blob))
    assert [(r["reason"], r["url"]) for r in full] == [(None, "https://e.org/0"), ("non_text_record", "https://e.org/i.png"),
                                                       (None, "https://e.org/2"), (None, "https://e.org/3")]
    assert DOCS[1] in full[0]["text"] and full[2]["text"] == DOCS[2]
    doc_of = {2: 0, 3: 1, 4: 2, 5: 3}          # record index -> its row in the full read
    n_trunc = 0
    for cut in range(1, len(blob) + 1):
        if gz:
            data, clean = _decompressed_prefix(records, cut, "gz")
            done = len(data)
        else:
            done = cut
            clean = any(e <= cut <= e + 4 for e in ends)
        complete = [i for i, e in enumerate(ends) if e <= done]
        expect = [summary(full)[doc_of[i]] for i in complete if i in doc_of]
        rows = read(_write(p, blob[:cut]))
        check_cut(rows, expect, None if clean else "truncated_warc", len(complete) + 1, cut)
        n_trunc += not clean
    assert n_trunc == len(blob) - (len(records) if gz else 5 * len(records))


def test_warc_junk_between_records_is_one_row_and_reading_goes_on(tmp_path):
    records = _warc_records(False)
    p = _write(tmp_path / "j.warc", b"".join(records[:3]) + b"garbage that is no record\r\n\r\n" + b"".join(records[3:]))
    rows = read(p)
    assert [r["reason"] for r in rows] == [None, "bad_warc_record", "non_text_record", None, None]
    assert rows[1]["url"] == f"{p}#4" and "not a WARC record" in rows[1]["detail"]


def test_parquet_cut_at_every_offset(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": DOCS}), p, row_group_size=3, compression="none", write_statistics=False)
    blob = p.read_bytes()
    assert [r["text"] for r in read(p)] == DOCS
    for cut in range(1, len(blob)):
        rows = read(_write(p, blob[:cut]))
        assert [(r["reason"], r["url"]) for r in rows] == [("truncated_parquet", str(p))], cut
    assert len(blob) < 1024


def test_parquet_damaged_row_group_is_one_row_and_the_others_are_read(tmp_path):
    p = tmp_path / "g.parquet"
    pq.write_table(pa.table({"text": DOCS}), p, row_group_size=3, compression="none")
    col = pq.ParquetFile(p).metadata.row_group(0).column(0)
    off = col.dictionary_page_offset or col.data_page_offset
    blob = bytearray(p.read_bytes())
    blob[off:off + 8] = b"\xff" * 8                   # the first page header of row group 0
    rows = read(_write(p, bytes(blob)))
    assert [(r["reason"], r["url"].rsplit("#", 1)[1]) for r in rows] == \
        [("unreadable_parquet", "0"), (None, "3"), (None, "4"), (None, "5")]
    assert "row group 0 (rows 0..2)" in rows[0]["detail"] and [r["text"] for r in rows[1:]] == DOCS[3:]


def test_hidden_files_are_skipped_with_a_message(tmp_path, caplog):
    d = tmp_path / "in"
    (d / ".git").mkdir(parents=True)
    (d / "sub").mkdir()
    for name in ("a.jsonl", ".a.jsonl.crc", ".git/b.jsonl", "sub/c.jsonl", "sub/.DS_Store", "_SUCCESS"):
        (d / name).write_bytes(JSONL)
    with caplog.at_level(logging.WARNING, logger="dataproc.readers"):
        found = list_inputs(InputSpec(path=str(d)))
    assert found == [str(d / "a.jsonl"), str(d / "sub/c.jsonl")]
    msg = caplog.text
    assert "skipped 3 hidden file(s)" in msg and ".a.jsonl.crc" in msg
    assert list_inputs(InputSpec(path=str(d / ".git/b.jsonl"))) == [str(d / ".git/b.jsonl")]   # named: read


def test_pipeline_keeps_the_good_rows_around_a_deep_line(tmp_path):
    """End to end through the local runner: 10 good documents and the line that used to cost them."""
    good = [t for lang in ("eng_Latn", "deu_Latn", "fra_Latn", "spa_Latn", "rus_Cyrl") for t in TEXTS[lang]]
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in good]
    lines.insert(5, '{"text": ' + "[" * 100_000)
    inp = tmp_path / "in"
    inp.mkdir()
    (inp / "deep.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = PipelineConfig.model_validate({"input": [{"path": str(inp), "format": "jsonl", "source": "t"}],
                                         "output": str(tmp_path / "out"), "runner": "local",
                                         "quality": {"enabled": []}, "langid": {"default_threshold": 0.0}})
    stats = runner.run(cfg)
    kept = runner.read_output(tmp_path / "out", "kept").to_pylist()
    rejected = runner.read_output(tmp_path / "out", "rejected").to_pylist()
    assert sorted(r["text"] for r in kept) == sorted(good)
    assert [(r["reason"], r["stage"], r["url"]) for r in rejected] == [("malformed_json", "read", f"{inp}/deep.jsonl#6")]
    assert stats["input_docs"] == 11 and stats["kept_docs"] == 10
