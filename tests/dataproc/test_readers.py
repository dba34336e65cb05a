"""Readers on real sample text and on every kind of bad input named in issue 3."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from dataproc.config import InputSpec, OcrConfig
from dataproc.readers import detect_format, list_inputs, read_file
from dataproc.readers.pdf import (
    build_ocr_request,
    build_refine_request,
    image_mime,
    parse_chat_response,
    read_pdf,
    set_transport,
)
from q3.schemas import STAGE_OUTPUT_SCHEMA, content_id


def read_all(path, **kw) -> pa.Table:
    spec = InputSpec(path=str(path), **kw)
    batches = [b for f in list_inputs(spec) for b in read_file(f, spec)]
    for b in batches:
        assert b.schema == STAGE_OUTPUT_SCHEMA
    return pa.Table.from_batches(batches, schema=STAGE_OUTPUT_SCHEMA)


def rows(t: pa.Table) -> list[dict]:
    return t.to_pylist()


def jsonl_bytes(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode()


@pytest.fixture(scope="module")
def some_docs(sample_docs) -> list[dict]:
    by = {}
    for d in sample_docs:
        by.setdefault(d["lang_hint"], d)
    return list(by.values())[:12]


def test_jsonl_plain_gz_zst_agree(tmp_path, some_docs):
    data = jsonl_bytes(some_docs)
    (tmp_path / "a.jsonl").write_bytes(data)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    tables = [read_all(tmp_path / n) for n in ("a.jsonl", "b.jsonl.gz", "c.jsonl.zst")]
    for t in tables:
        assert t.num_rows == len(some_docs)
        assert t.column("reason").null_count == t.num_rows
        assert t.column("text").to_pylist() == [d["text"] for d in some_docs]
        assert t.column("id").to_pylist() == [content_id(d["text"]) for d in some_docs]
        assert t.column("n_chars").to_pylist() == [len(d["text"]) for d in some_docs]
        assert t.column("url").to_pylist() == [d["url"] for d in some_docs]
    # code keeps its reader-given language (LID passes it through); the rest is left to LID.
    langs = dict(zip(tables[0].column("url").to_pylist(), tables[0].column("lang").to_pylist(), strict=True))
    for d in some_docs:
        assert langs[d["url"]] == (d["lang_hint"] if d["lang_hint"] == "code_Python" else None)


def test_sample_jsonl_with_lang_from_path(sample_dir, sample_docs):
    t = read_all(sample_dir / "docs.jsonl", lang_from_path=True, source="manpages")
    assert t.num_rows == len(sample_docs)
    assert t.column("detail").to_pylist() == [d["lang_hint"] for d in sample_docs]
    assert set(t.column("source").to_pylist()) == {"manpages"}


def test_malformed_json_and_invalid_utf8_lines_are_rejected_rows(tmp_path, some_docs):
    good = jsonl_bytes(some_docs[:3])
    bad = (b'{"text": "unterminated\n'
           b'[1, 2, 3]\n'
           b'{"no_text": 1}\n'
           b'{"text": "caf\xe9 latin-1 byte"}\n'
           b'{"text": "lone \\ud800 surrogate"}\n')
    (tmp_path / "x.jsonl").write_bytes(good + bad + jsonl_bytes(some_docs[3:5]))
    t = rows(read_all(tmp_path / "x.jsonl"))
    assert len(t) == 3 + 5 + 2
    assert [r["reason"] for r in t] == [None] * 3 + ["malformed_json", "malformed_json", "missing_text",
                                                      "invalid_utf8", "invalid_utf8"] + [None] * 2
    assert all(r["stage"] == "read" for r in t[3:8])
    assert t[3]["url"].endswith("x.jsonl#4")
    assert t[6]["text"] == "caf\ufffd latin-1 byte" and "e9" in t[6]["detail"]
    assert t[7]["text"] == "lone ? surrogate"
    assert [r["text"] for r in t[8:]] == [d["text"] for d in some_docs[3:5]]


def test_truncated_gzip_keeps_lines_before_the_tail(tmp_path, sample_docs):
    docs = sample_docs[:200]
    blob = gzip.compress(jsonl_bytes(docs))
    (tmp_path / "t.jsonl.gz").write_bytes(blob[: len(blob) * 2 // 3])
    t = rows(read_all(tmp_path / "t.jsonl.gz"))
    kept = [r for r in t if r["reason"] is None]
    assert t[-1]["reason"] == "truncated_gzip" and len(t) == len(kept) + 1
    assert 0 < len(kept) < len(docs)
    assert [r["text"] for r in kept] == [d["text"] for d in docs[: len(kept)]]


def test_truncated_zstd(tmp_path, sample_docs):
    blob = zstandard.ZstdCompressor().compress(jsonl_bytes(sample_docs[:100]))
    (tmp_path / "t.jsonl.zst").write_bytes(blob[: len(blob) // 2])
    t = rows(read_all(tmp_path / "t.jsonl.zst"))
    assert t[-1]["reason"] == "truncated_zstd"
    assert all(r["reason"] is None for r in t[:-1])


def test_text_directory_with_binary_empty_invalid_files(tmp_path, sample_dir):
    d = tmp_path / "corpus"
    d.mkdir()
    src = sorted((sample_dir / "raw" / "deu_Latn").glob("*.txt"))[:3]
    for p in src:
        (d / p.name).write_bytes(p.read_bytes())
    (d / "zz_binary.bin").write_bytes(bytes(range(256)) * 4)
    (d / "zz_empty.txt").write_bytes(b"")
    (d / "zz_latin1.txt").write_bytes("Grüße aus Köln".encode("latin-1"))
    (d / "_Q3_SUCCESS").write_text("{}")
    t = rows(read_all(d))
    by_name = {Path(r["url"]).name: r for r in t}
    assert len(t) == 6
    for p in src:
        r = by_name[p.name]
        assert r["reason"] is None and r["text"] == p.read_text(encoding="utf-8")
    assert by_name["zz_binary.bin"]["reason"] == "binary_file" and by_name["zz_binary.bin"]["text"] is None
    assert by_name["zz_empty.txt"]["reason"] == "empty_file"
    assert by_name["zz_latin1.txt"]["reason"] == "invalid_utf8"
    assert by_name["zz_latin1.txt"]["text"] == "Gr\ufffd\ufffde aus K\ufffdln"


def test_raw_tree_lang_from_path(sample_dir):
    t = read_all(sample_dir / "raw" / "ukr_Cyrl", lang_from_path=True)
    assert t.num_rows > 0 and set(t.column("detail").to_pylist()) == {"ukr_Cyrl"}


def test_fifty_megabyte_document_is_one_row(tmp_path, sample_docs):
    text = "\n\n".join(d["text"] for d in sample_docs)
    text = (text * (50_000_000 // len(text) + 1))[:50_000_000]
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n" + json.dumps({"text": "after"}) + "\n")
    (tmp_path / "big.txt").write_text(text)
    t = read_all(tmp_path / "big.jsonl")
    assert t.num_rows == 2 and t.column("n_chars").to_pylist() == [50_000_000, 5]
    t = read_all(tmp_path / "big.txt")
    assert t.num_rows == 1 and t.column("n_chars")[0].as_py() == 50_000_000
    # downstream, normalise rejects it per config instead of truncating or crashing
    from dataproc.stages.normalise import NormaliseStage
    out = NormaliseStage()(t.to_batches()[0]).to_pylist()[0]
    assert out["reason"] == "too_long" and out["stage"] == "normalise"


def test_parquet(tmp_path, some_docs):
    tbl = pa.table({"text": [d["text"] for d in some_docs] + [None],
                    "url": [d["url"] for d in some_docs] + ["u:null"],
                    "lang_hint": [d["lang_hint"] for d in some_docs] + [None]})
    pq.write_table(tbl, tmp_path / "x.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    t = rows(read_all(tmp_path / "x.parquet"))
    assert [r["text"] for r in t[:-1]] == [d["text"] for d in some_docs]
    assert t[-1]["reason"] == "missing_text"
    bad = rows(read_all(tmp_path / "broken.parquet"))
    assert len(bad) == 1 and bad[0]["reason"] == "unreadable_parquet"


def _warc(tmp_path: Path, docs: list[dict], wet: bool) -> Path:
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    path = tmp_path / ("x.warc.wet.gz" if wet else "x.warc.gz")
    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        w.write_record(w.create_warcinfo_record("x", {"software": "q3-test"}))
        for i, d in enumerate(docs):
            uri = f"https://example.org/{i}"
            if wet:
                rec = w.create_warc_record(uri, "conversion", payload=io.BytesIO(d["text"].encode()),
                                           warc_content_type="text/plain")
            else:
                body = ("<html><head><title>t</title><script>var x=1;</script></head><body><p>"
                        + d["text"].replace("&", "&amp;").replace("<", "&lt;").replace("\n\n", "</p><p>")
                        + "</p></body></html>").encode()
                hdr = StatusAndHeaders("200 OK", [("Content-Type", "text/html; charset=utf-8")], protocol="HTTP/1.1")
                rec = w.create_warc_record(uri, "response", payload=io.BytesIO(body), http_headers=hdr)
            w.write_record(rec)
        if not wet:
            img = StatusAndHeaders("200 OK", [("Content-Type", "image/png")], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record("https://example.org/i.png", "response",
                                                payload=io.BytesIO(b"\x89PNG...."), http_headers=img))
    return path


def test_wet_and_warc(tmp_path, some_docs):
    docs = some_docs[:5]
    wet = rows(read_all(_warc(tmp_path, docs, wet=True)))
    assert [r["text"] for r in wet] == [d["text"] for d in docs]
    assert wet[0]["url"] == "https://example.org/0"
    warc = rows(read_all(_warc(tmp_path, docs, wet=False)))
    assert len(warc) == len(docs) + 1 and warc[-1]["reason"] == "non_text_record"
    for r, d in zip(warc, docs, strict=False):
        assert r["reason"] is None and "var x" not in r["text"]
        first = d["text"].split("\n\n")[0].split("\n")[0]
        assert first in r["text"]


def test_html_main_content_by_resiliparse():
    from dataproc.readers.warc import html_to_text

    article = " ".join(f"Sentence {i} of the article says something about rivers &amp; bridges." for i in range(12))
    page = ("<html><head><title>Site</title><style>p{color:red}</style><script>var x=1;</script></head><body>"
            "<nav><ul><li><a href='/'>Home</a></li><li><a href='/about'>About us</a></li></ul></nav>"
            f"<main><article><h1>Rivers</h1><p>{article}</p><p>Second paragraph.</p></article></main>"
            "<footer>Copyright 2026 Example Corp. All rights reserved.</footer></body></html>")
    text = html_to_text(page)
    assert "rivers & bridges" in text and "Second paragraph." in text
    assert "\n\nSecond paragraph." in text                 # blocks stay separate lines
    assert not any(x in text for x in ("var x", "color:red", "About us", "Copyright 2026"))
    # a short page whose main content the heuristics find empty keeps its text
    assert html_to_text("<html><body><div>Just one line.</div></body></html>") == "Just one line."


def test_truncated_warc(tmp_path, some_docs):
    p = _warc(tmp_path, some_docs, wet=True)
    blob = p.read_bytes()
    p.write_bytes(blob[: int(len(blob) * 0.7)])
    t = rows(read_all(p))
    assert t[-1]["reason"] in ("truncated_warc", "unreadable_warc")
    assert all(r["reason"] is None for r in t[:-1]) and len(t) >= 2


def _pdf(path: Path, pages: list[str]) -> Path:
    """A real PDF with a text layer, written with pypdf (Helvetica, one text object per line)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    w = PdfWriter()
    for text in pages:
        page = w.add_blank_page(612, 792)
        font = DictionaryObject({NameObject("/Type"): NameObject("/Font"),
                                 NameObject("/Subtype"): NameObject("/Type1"),
                                 NameObject("/BaseFont"): NameObject("/Helvetica")})
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): w._add_object(font)})})
        ops = ["BT /F1 11 Tf 14 TL 50 750 Td"]
        for line in text.split("\n"):
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({esc}) Tj T*")
        ops.append("ET")
        stream = DecodedStreamObject()
        stream.set_data("\n".join(ops).encode("latin-1"))
        page[NameObject("/Contents")] = w._add_object(stream)
    with open(path, "wb") as f:
        w.write(f)
    return path


def test_pdf_text_layer_and_unreadable_and_scanned(tmp_path, docs_by_lang):
    eng = [ln for ln in docs_by_lang["eng_Latn"][0]["text"].split("\n") if ln.strip() and ln.isascii()][:20]
    good = _pdf(tmp_path / "good.pdf", ["\n".join(eng[:10]), "\n".join(eng[10:20])])
    t = rows(read_all(good))
    assert len(t) == 1 and t[0]["reason"] is None
    for line in eng[:20]:
        assert " ".join(line.split()) in " ".join(t[0]["text"].split())
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 10)
    t = rows(read_all(tmp_path / "bad.pdf"))
    assert len(t) == 1 and t[0]["reason"] == "unreadable_pdf"
    blank = _pdf(tmp_path / "scan.pdf", [""])
    t = rows(read_all(blank))
    assert t[0]["reason"] == "pdf_no_text" and "no OCR endpoint" in t[0]["detail"]


def test_ocr_request_building_and_response_parsing():
    cfg = OcrConfig(endpoint="http://127.0.0.1:9/v1", model="vlm", refine=True, refine_model="llm", max_tokens=512)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
    req = build_ocr_request([(png, image_mime(png))], cfg, page=3)
    assert req["model"] == "vlm" and req["max_tokens"] == 512 and req["temperature"] == 0.0
    content = req["messages"][0]["content"]
    assert content[0]["type"] == "text"
    assert content[1]["type"] == "image_url"
    assert content[1]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")
    assert image_mime(b"\xff\xd8\xff\xe0") == "image/jpeg" and image_mime(b"??", "x.jp2") == "image/jp2"
    ref = build_refine_request("Tbe qu1ck fox", cfg)
    assert ref["model"] == "llm" and ref["messages"][0]["content"].endswith("Tbe qu1ck fox")
    ok = {"choices": [{"message": {"role": "assistant", "content": "```text\nHello page\n```"},
                       "finish_reason": "stop"}]}
    assert parse_chat_response(ok) == "Hello page"
    parts = {"choices": [{"message": {"content": [{"type": "text", "text": "A "}, {"type": "text", "text": "B"}]}}]}
    assert parse_chat_response(parts) == "A B"
    for bad in ({"error": {"message": "overloaded"}}, {"choices": []},
                {"choices": [{"message": {"content": ""}, "finish_reason": "length"}]}, []):
        with pytest.raises(ValueError):
            parse_chat_response(bad)


def _scanned_pdf(path: Path) -> Path:
    """A 'scanned' page: one embedded RGB image, no text layer."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    w = PdfWriter()
    page = w.add_blank_page(200, 200)
    img = DecodedStreamObject()
    img.set_data(bytes([200]) * (4 * 4 * 3))
    img.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Image"),
                NameObject("/Width"): NumberObject(4), NameObject("/Height"): NumberObject(4),
                NameObject("/ColorSpace"): NameObject("/DeviceRGB"), NameObject("/BitsPerComponent"): NumberObject(8)})
    page[NameObject("/Resources")] = DictionaryObject(
        {NameObject("/XObject"): DictionaryObject({NameObject("/Im0"): w._add_object(img)})})
    cs = DecodedStreamObject()
    cs.set_data(b"q 200 0 0 200 0 0 cm /Im0 Do Q")
    page[NameObject("/Contents")] = w._add_object(cs)
    with open(path, "wb") as f:
        w.write(f)
    return path


def test_ocr_hook_runs_through_the_transport_for_pages_without_text(tmp_path):
    """A scanned page (image only, no text layer) goes to the transport; its answer becomes the text."""
    path = _scanned_pdf(tmp_path / "scan.pdf")
    seen = []

    def transport(request, cfg):
        seen.append(request)
        last = request["messages"][0]["content"]
        if isinstance(last, list):
            return {"choices": [{"message": {"content": "Scanned words here"}}]}
        return {"choices": [{"message": {"content": "Scanned words here, refined"}}]}

    spec = InputSpec(path=str(path), ocr=OcrConfig(endpoint="http://127.0.0.1:1/v1", refine=True))
    set_transport(transport)
    try:
        t = pa.Table.from_batches(list(read_pdf(str(path), spec))).to_pylist()
    finally:
        set_transport(None)
    assert t[0]["reason"] is None and t[0]["text"] == "Scanned words here, refined"
    assert len(seen) == 2 and seen[0]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/")


def test_detect_format():
    assert detect_format("a/b.jsonl.zst") == "jsonl"
    assert detect_format("x.warc.wet.gz") == "wet"
    assert detect_format("x.warc.gz") == "warc"
    assert detect_format("x.PDF") == "pdf"
    assert detect_format("x.md") == "text"


def test_ocr_end_to_end_through_q3_llm_against_a_local_server(tmp_path):
    """The default transport (q3/llm.py) against a real OpenAI-compatible HTTP server on 127.0.0.1."""
    pytest.importorskip("q3.llm")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    got = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server API
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            got.append((self.path, body))
            content = body["messages"][0]["content"]
            answer = "Page text from the VLM" if isinstance(content, list) else "Page text, refined"
            out = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer},
                                           "finish_reason": "stop"}],
                              "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        path = _scanned_pdf(tmp_path / "scan.pdf")
        ocr = OcrConfig(endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1", model="vlm", refine=True)
        t = rows(read_all(path, ocr=ocr.model_dump()))
    finally:
        server.shutdown()
        thread.join()
    assert t[0]["reason"] is None and t[0]["text"] == "Page text, refined"
    assert [p for p, _ in got] == ["/v1/chat/completions"] * 2
    assert got[0][1]["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/")


@pytest.mark.parametrize("name", ["x.jsonl", "x.jsonl.gz", "x.jsonl.zst", "x.parquet", "x.warc.gz",
                                  "x.wet", "x.pdf", "x.txt"])
def test_garbage_in_any_format_becomes_rejected_rows(tmp_path, name):
    import random

    rnd = random.Random(name)
    garbage = bytes(rnd.randrange(256) for _ in range(20_000))
    (tmp_path / name).write_bytes(garbage)
    t = rows(read_all(tmp_path / name))       # must not raise
    assert t and all(r["reason"] is not None and r["stage"] == "read" for r in t)


@pytest.mark.parametrize("name", ["e.jsonl", "e.jsonl.gz", "e.parquet", "e.warc.gz", "e.pdf", "e.txt"])
def test_empty_file_in_any_format_is_one_rejected_row(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    t = rows(read_all(tmp_path / name))
    assert [r["reason"] for r in t] == ["empty_file"]
