"""`judge`: a model-based reward with a reference answer (the report's general-RL judge).

An LLM behind any OpenAI-compatible endpoint (vLLM, SGLang, `q3 serve`, a hosted API), called
through q3.llm's one client (batched, retried, cached), compares the reply's answer with
meta["reference"] and gives a verdict:
- `verdict: score` asks for JSON {"score": 0..10}; the reward is score / 10;
- `verdict: yes_no` asks for [[YES]] or [[NO]] (or JSON {"verdict": "YES"|"NO"} with a schema).
`schema: true` sends the verdict's JSON schema as response_format, so a server with constrained
decoding (q3 serve, vLLM) can only answer in the format.

Faults never escape `score()`: an endpoint error (connection refused, HTTP error, timeout after the
client's retries), a missing reference or an unparsable verdict give `default_score` with the
reason in details and a count in `counters` (logged by the caller as metrics).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Literal

from pydantic import Field

from q3.config import ConfigError
from q3.llm import ChatRequest, EndpointConfig, LLMClient, extract_json, validate_schema
from q3.log import get_logger
from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    answer_part,
    options,
    register,
    result,
)

log = get_logger("train.post.rewards.judge")

SYSTEM = "You are a strict grader. You compare a candidate answer with a reference answer."
PROMPTS = {
    "score": ("Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{answer}\n\n"
              "How well does the candidate's final answer agree with the reference (0 = wrong or missing, "
              "10 = fully equivalent)? Reply with JSON only: {{\"score\": <integer 0-10>}}"),
    "yes_no": ("Question:\n{question}\n\nReference answer:\n{reference}\n\nCandidate answer:\n{answer}\n\n"
               "Is the candidate's final answer equivalent to the reference? Reply with [[YES]] or [[NO]] only."),
}
SCHEMAS = {
    "score": {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 10}},
              "required": ["score"]},
    "yes_no": {"type": "object", "properties": {"verdict": {"enum": ["YES", "NO"]}}, "required": ["verdict"]},
}
_YES_NO = re.compile(r"\[\[\s*(YES|NO)\s*\]\]", re.I)


class JudgeOptions(RewardOptions):
    endpoint: EndpointConfig = Field(default_factory=lambda: EndpointConfig(max_retries=2, timeout_s=120))
    verdict: Literal["score", "yes_no"] = "score"
    schema_: bool = Field(False, alias="schema")     # send the verdict schema as response_format
    prompt: str | None = None          # template with {question}, {reference}, {answer}
    system: str | None = SYSTEM
    default_score: float = 0.0         # for endpoint errors, unparsable verdicts, missing references
    answer_only: bool = True           # judge the answer after </think>, not the reasoning
    max_tokens: int = Field(64, ge=1)
    temperature: float = Field(0.0, ge=0)


def parse_verdict(text: str | None, verdict: str) -> tuple[float | None, str]:
    """(score in [0, 1], "ok") or (None, why not) from a judge's reply."""
    if not text or not text.strip():
        return None, "empty verdict"
    if verdict == "yes_no":
        found = {m.upper() for m in _YES_NO.findall(text)}
        if len(found) == 1:
            return (1.0 if found == {"YES"} else 0.0), "ok"
        try:
            data = extract_json(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and not validate_schema(data, SCHEMAS["yes_no"]):
            return (1.0 if data["verdict"] == "YES" else 0.0), "ok"
        return None, "no single [[YES]]/[[NO]]" if not found else "both [[YES]] and [[NO]]"
    try:
        data = extract_json(text)
    except ValueError:
        return None, "no JSON verdict"
    s = data.get("score") if isinstance(data, dict) else None
    if isinstance(s, bool) or not isinstance(s, int | float) or not 0 <= s <= 10:
        return None, f"score missing or outside 0..10: {s!r}"[:120]
    return float(s) / 10.0, "ok"


class JudgeReward:
    def __init__(self, opts: JudgeOptions):
        self.name = opts.name or "judge"
        self.opts = opts
        self.template = opts.prompt or PROMPTS[opts.verdict]
        try:
            self.template.format(question="", reference="", answer="")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"reward judge: prompt must use only {{question}}, {{reference}}, {{answer}}: {e}") from None
        if not opts.endpoint.resolved_base_url() or not opts.endpoint.resolved_model():
            raise ConfigError(f"reward {self.name!r}: no judge endpoint: set endpoint.base_url and endpoint.model "
                              "(or the env vars Q3_LLM_BASE_URL, Q3_LLM_MODEL)")
        self.counters: Counter[str] = Counter()
        self.client = LLMClient(opts.endpoint)

    def request(self, item: RewardInput) -> ChatRequest:
        o = self.opts
        question = next((m.get("content") or "" for m in reversed(item.messages) if m.get("role") == "user"), "")
        answer = answer_part(item.reply) if o.answer_only else item.reply
        prompt = self.template.format(question=question, reference=item.meta["reference"], answer=answer)
        return ChatRequest.user(prompt, system=o.system, params={"max_tokens": o.max_tokens, "temperature": o.temperature},
                                schema=SCHEMAS[o.verdict] if o.schema_ else None)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        out: list[RewardResult | None] = [None] * len(items)
        todo: list[int] = []
        err = ""
        for i, x in enumerate(items):
            if not isinstance(x.meta.get("reference"), str) or not x.meta["reference"].strip():
                out[i] = self._fault("no_reference", "the task row has no reference answer")
            else:
                todo.append(i)
        if todo:
            try:
                answers = self.client.complete_many([self.request(items[i]) for i in todo])
            except Exception as e:   # noqa: BLE001 - config/auth errors too: the RL step goes on, counted
                log.warning("judge endpoint failed for a batch of %d: %s", len(todo), e)
                answers = [None] * len(todo)
                err = f"{type(e).__name__}: {e}"[:300]
            for i, a in zip(todo, answers, strict=True):
                if a is None:
                    out[i] = self._fault("endpoint_error", err)
                elif not a.ok and not (a.error or "").startswith(("invalid_json", "schema_mismatch")):
                    out[i] = self._fault("endpoint_error", a.error or "")
                else:
                    s, why = parse_verdict(a.text, self.opts.verdict)
                    if s is None:
                        out[i] = self._fault("unparsable", why, verdict=(a.text or "")[:200])
                    else:
                        self.counters["ok"] += 1
                        out[i] = result(s, "ok", verdict=(a.text or "")[:200])
        return out  # type: ignore[return-value]

    def _fault(self, kind: str, why: str, **extra: Any) -> RewardResult:
        self.counters[kind] += 1
        return result(self.opts.default_score, kind, error=why, **extra)


@register("judge")
def build(spec: dict) -> JudgeReward:
    return JudgeReward(options(JudgeOptions, spec))
