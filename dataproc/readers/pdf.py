"""PDF: the text layer via pypdf; pages without one go to a vision-language model (OCR hook).

The report's PDF path is "OCR by a vision-language model, then refined by an LLM". Here:

1. `page.extract_text()` for every page (born-digital PDFs need nothing else);
2. a page whose text layer is empty (a scan) has its embedded image(s) sent to an
   OpenAI-compatible chat-completions endpoint as an `image_url` data: URI (`build_ocr_request`),
   the reply parsed by `parse_chat_response`;
3. optionally the OCR text is sent once more to an LLM to fix recognition errors
   (`build_refine_request`).

Steps 2-3 run only when `spec.ocr.endpoint` is set. The HTTP call itself goes through the
project's one OpenAI-compatible client (q3/llm.py, DESIGN.md) via `llm_transport`; `set_transport`
swaps it (e.g. for a local model), so this module never grows a second client.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from dataproc.config import InputSpec, OcrConfig
from dataproc.readers.common import Rows, hex_prefix, read_whole

OCR_PROMPT = ("Transcribe all text on this page exactly as written, in reading order, in its "
              "original language. Output only the text, no commentary; use blank lines between "
              "paragraphs and Markdown for tables and formulas.")
REFINE_PROMPT = ("The following text was produced by OCR and may contain recognition errors "
                 "(broken words, wrong characters, stray hyphenation). Correct only such errors, "
                 "keep the language, wording and layout, and output only the corrected text.\n\n")

# --- injection point: the OpenAI-compatible transport -------------------------------------------
# A callable (request_json: dict, cfg: OcrConfig) -> response_json: dict that POSTs to
# f"{cfg.endpoint}/chat/completions". Default (None): `llm_transport`, i.e. q3/llm.py's client.
Transport = Callable[[dict[str, Any], OcrConfig], dict[str, Any]]
_transport: Transport | None = None


def set_transport(fn: Transport | None) -> None:
    global _transport
    _transport = fn


def llm_transport(request: dict[str, Any], cfg: OcrConfig) -> dict[str, Any]:
    """The default transport: the project's shared client q3/llm.py (retries, cache, limits)."""
    try:
        from q3.llm import ChatRequest, EndpointConfig, complete_many
    except ImportError as e:   # the shared client is not in this checkout
        raise RuntimeError("OCR endpoint configured but q3/llm.py is missing: install a transport "
                           "with dataproc.readers.pdf.set_transport") from e
    endpoint = EndpointConfig(base_url=cfg.endpoint, model=request["model"], cache_dir=cfg.cache_dir,
                              timeout_s=cfg.timeout_s)
    params = {k: v for k, v in request.items() if k not in ("model", "messages", "metadata")}
    res = complete_many(endpoint, [ChatRequest(messages=request["messages"], params=params)])[0]
    if res.error:
        return {"error": res.error}
    return {"choices": [{"message": {"role": "assistant", "content": res.text},
                         "finish_reason": res.finish_reason}]}


def _call(request: dict[str, Any], cfg: OcrConfig) -> dict[str, Any]:
    return (_transport or llm_transport)(request, cfg)
# -------------------------------------------------------------------------------------------------


_MAGIC = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"), (b"GIF8", "image/gif"),
          (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"), (b"RIFF", "image/webp"),
          (b"\x00\x00\x00\x0cjP  ", "image/jp2")]


def image_mime(data: bytes, name: str = "") -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    ext = Path(name).suffix.lower().lstrip(".")
    return {"jpg": "image/jpeg", "jpeg": "image/jpeg", "png": "image/png", "jp2": "image/jp2",
            "tif": "image/tiff", "tiff": "image/tiff"}.get(ext, "application/octet-stream")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def build_ocr_request(images: list[tuple[bytes, str]], cfg: OcrConfig, page: int | None = None
                      ) -> dict[str, Any]:
    """A chat-completions request asking a VLM to transcribe one page's image(s)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": cfg.prompt or OCR_PROMPT}]
    for data, mime in images:
        content.append({"type": "image_url", "image_url": {"url": data_uri(data, mime)}})
    req: dict[str, Any] = {"model": cfg.model, "messages": [{"role": "user", "content": content}],
                           "temperature": 0.0, "max_tokens": cfg.max_tokens}
    if page is not None:
        req["metadata"] = {"page": str(page)}
    return req


def build_refine_request(text: str, cfg: OcrConfig) -> dict[str, Any]:
    return {"model": cfg.refine_model or cfg.model,
            "messages": [{"role": "user", "content": REFINE_PROMPT + text}],
            "temperature": 0.0, "max_tokens": cfg.max_tokens}


_FENCE = re.compile(r"^```[\w-]*\n(.*?)\n?```\s*$", re.S)


def parse_chat_response(resp: dict[str, Any]) -> str:
    """The assistant text of a chat-completions response (string or list-of-parts content).

    Raises ValueError for a response without a usable choice (error payloads, refusals).
    """
    if not isinstance(resp, dict):
        raise ValueError(f"response is {type(resp).__name__}, not an object")
    if "error" in resp:
        raise ValueError(f"endpoint error: {resp['error']}")
    choices = resp.get("choices") or []
    if not choices:
        raise ValueError("response has no choices")
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        reason = choices[0].get("finish_reason")
        raise ValueError(f"empty content (finish_reason={reason}, refusal={msg.get('refusal')})")
    text = content.strip()
    m = _FENCE.match(text)   # models like to wrap transcriptions in a code fence
    return m.group(1).strip() if m else text


def ocr_page(page: Any, index: int, cfg: OcrConfig) -> str:
    images = [(img.data, image_mime(img.data, img.name)) for img in page.images]
    if not images:
        return ""
    text = parse_chat_response(_call(build_ocr_request(images, cfg, index), cfg))
    if cfg.refine:
        text = parse_chat_response(_call(build_refine_request(text, cfg), cfg))
    return text


def read_pdf(path: str, spec: InputSpec) -> Iterator[pa.RecordBatch]:
    from pypdf import PdfReader

    rows = Rows(spec)
    raw = read_whole(path, rows)
    if raw is None:
        yield from rows.flush()
        return
    ocr = spec.ocr
    try:
        reader = PdfReader(path)
        if reader.is_encrypted:
            reader.decrypt("")
        pages, missing, ocr_errors = [], 0, []
        for i, page in enumerate(reader.pages):
            text = (page.extract_text() or "").strip()
            if len(text) < ocr.min_page_chars:
                if ocr.endpoint:
                    try:
                        text = ocr_page(page, i, ocr)
                    except Exception as e:   # noqa: BLE001 - one bad page must not lose the file
                        ocr_errors.append(f"page {i}: {type(e).__name__}: {e}"[:200])
                if not text:
                    missing += 1
            pages.append(text)
    except Exception as e:   # noqa: BLE001 - pypdf raises many types on broken files
        rows.reject("unreadable_pdf", path, raw, detail=f"{type(e).__name__}: {e}"[:200] + f"; head {hex_prefix(raw, 16)}")
        yield from rows.flush()
        return
    body = "\n\n".join(p for p in pages if p)
    if not body:
        why = "; ".join(ocr_errors) or ("OCR found no text" if ocr.endpoint else "no OCR endpoint configured")
        rows.reject("pdf_no_text", path, raw, text="", detail=f"{missing}/{len(pages)} pages without text layer; {why}")
    else:
        rows.keep(body, path, detail=(f"{missing}/{len(pages)} pages without text" if missing else None))
    yield from rows.flush()
