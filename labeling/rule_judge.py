"""A RULE-BASED judge behind a real OpenAI-compatible HTTP server. It is NOT a language model.

There are no LLM weights in this project's CPU demo, so to exercise the whole labeling path
(judge -> train classifiers -> apply in Spark) with real HTTP, real JSON-schema answers and real
agreement figures, this server answers judge prompts with a deterministic, documented rubric over
surface signals of the document (length, section structure, repetition, code/math rules). The
classifiers trained on its labels are therefore learning this rubric, not an LLM's judgement.
Point `endpoint.base_url` at vLLM/SGLang/`q3 serve` for real judgements.

    python -m labeling.rule_judge --port 8011      # model name: rule-judge-v1

The rubric (per dimension, from `rule_judgement`):
  edu (0-5, additive): +1 >= 500 chars; +1 >= 3 section headings; +1 code, math or worked examples;
      +1 >= 3000 chars; +1 >= 6 headings and < 10% repeated lines.
  quality (0-5): 3, -1 if >= 20% repeated lines, -1 if < 800 chars, -1 if < 50% letters among
      non-space characters, +1 if >= 3 headings and >= 2000 chars, +1 if >= 6000 chars and < 5% repeats.
  reasoning (0-5): +2 code, +2 math, +1 if > 50% code lines, +1 if >= 3 headings and >= 3000 chars.
  domain: programming_code (code lines > 40%), mathematics (math), computing_software
      (man-page header or >= 3 headings), else other.
  safety: privacy_pii severity 1 when an e-mail address appears, else none 0.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from labeling.rules import code_signal, math_signal

MODEL = "rule-judge-v1"
_DOC = re.compile(r"<document>\n?(.*?)\n?</document>", re.S)
_HEADING = re.compile(r"^\s{0,2}[^\W\d_][^\n]{0,38}$")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")
_EXAMPLE = re.compile(r"(?m)^\s*(\$ |>>> |#\s)|EXAMPLE|BEISPIEL|EXEMPLE|EJEMPLO|ПРИМЕР|例|PRZYKŁAD")
_MANHEAD = re.compile(r"^\s*[\w.-]+\(\d\w*\)")


def features(text: str) -> dict[str, Any]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    headings = sum(1 for ln in lines if _HEADING.match(ln) and (ln.isupper() or len(ln.split()) <= 3))
    repeated = 1 - len(set(lines)) / len(lines) if lines else 0.0
    nonspace = [c for c in text if not c.isspace()]
    alpha = sum(c.isalpha() for c in nonspace) / len(nonspace) if nonspace else 0.0
    has_code, code_frac = code_signal(text)
    has_math, _ = math_signal(text)
    return {"n": len(text), "headings": headings, "repeated": repeated, "alpha": alpha,
            "code": has_code, "code_frac": code_frac, "math": has_math,
            "examples": bool(_EXAMPLE.search(text)), "man": bool(_MANHEAD.match(text)),
            "email": bool(_EMAIL.search(text))}


def rule_judgement(dimension: str, text: str) -> dict[str, Any]:
    f = features(text)
    clamp = lambda x, hi=5: max(0, min(hi, int(x)))  # noqa: E731
    if dimension == "edu":
        s = (f["n"] >= 500) + (f["headings"] >= 3) + (f["code"] or f["math"] or f["examples"]) \
            + (f["n"] >= 3000) + (f["headings"] >= 6 and f["repeated"] < 0.1)
        return {"reason": "rule-based rubric (length, structure, examples)", "score": clamp(s)}
    if dimension == "quality":
        s = 3 - (f["repeated"] >= 0.2) - (f["n"] < 800) - (f["alpha"] < 0.5) \
            + (f["headings"] >= 3 and f["n"] >= 2000) + (f["n"] >= 6000 and f["repeated"] < 0.05)
        return {"reason": "rule-based rubric (repetition, length, letters)", "score": clamp(s)}
    if dimension == "reasoning":
        s = 2 * f["code"] + 2 * f["math"] + (f["code_frac"] > 0.5) + (f["headings"] >= 3 and f["n"] >= 3000)
        return {"reason": "rule-based rubric (code, math, structure)", "score": clamp(s)}
    if dimension == "domain":
        if f["code"] and f["code_frac"] > 0.4:
            return {"domain": "programming_code"}
        if f["math"]:
            return {"domain": "mathematics"}
        if f["man"] or f["headings"] >= 3:
            return {"domain": "computing_software"}
        return {"domain": "other"}
    if dimension == "safety":
        return {"category": "privacy_pii", "severity": 1} if f["email"] else {"category": "none", "severity": 0}
    return {}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *a: Any) -> None:
        pass

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "q3"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        if body.get("model") != MODEL:
            self._json(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
            return
        dim = ((body.get("response_format") or {}).get("json_schema") or {}).get("name", "")
        prompt = body["messages"][-1]["content"]
        m = _DOC.search(prompt)
        answer = rule_judgement(dim, m.group(1) if m else prompt)
        content = json.dumps(answer, ensure_ascii=False)
        self._json(200, {"id": "rulejudge", "object": "chat.completion", "created": int(time.time()),
                         "model": MODEL, "choices": [{"index": 0, "finish_reason": "stop",
                                                      "message": {"role": "assistant", "content": content}}],
                         "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(content) // 4,
                                   "total_tokens": (len(prompt) + len(content)) // 4}})


class RuleJudgeServer:
    """`with RuleJudgeServer() as s: s.base_url` — the rule judge on 127.0.0.1, in a thread."""

    def __init__(self, port: int = 0):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self.httpd.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> RuleJudgeServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8011)
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), _Handler)
    print(f"rule-based judge (not an LLM) at http://127.0.0.1:{a.port}/v1, model {MODEL}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
