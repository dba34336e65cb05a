"""How far an LLM judge agrees with another judge (the demo: SmolLM2 vs the rule-based judge),
from the judgements both committed (`<workdir>/judgements/judgements.parquet`; no area imports).

Joined on (document id, dimension). Stratified sampling is deterministic and fills strata round
robin, so a small sample's documents are among a larger sample's with the same seed and input:
the demo's 12-document LLM sample is compared with the rule judge's 600-document one as is.

    rows = agreement(judgements(rule_dir), judgements(llm_dir))
    print(agreement_line(rows))     # edu: 9/12 valid, exact 0.22, within 1 0.67; domain: ...
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

ANSWER_FIELD = {"edu": "score", "quality": "score", "reasoning": "score", "domain": "domain",
                "safety": "category", "code": "has_code", "math": "has_math"}


def judgements(workdir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """{(id, dimension): row} of a committed `q3 label judge` output; {} when there is none."""
    import pyarrow.parquet as pq

    f = Path(workdir) / "judgements" / "judgements.parquet"
    return {(r["id"], r["dimension"]): r for r in pq.read_table(f).to_pylist()} if f.is_file() else {}


def _field(answer: dict[str, Any], dim: str) -> Any:
    key = ANSWER_FIELD.get(dim)
    if key not in answer:
        key = next((k for k in answer if k != "reason"), None)
    return answer.get(key) if key else None


def agreement(ref: dict, llm: dict) -> dict[str, dict[str, Any]]:
    """Per dimension the LLM judged: requests, valid answers, error reasons, exact agreement with
    `ref` where both are valid; for scores also within +-1 and the mean absolute difference; and
    both judges' answer spreads (a judge that always says the same thing agrees by accident)."""
    out: dict[str, dict[str, Any]] = {}
    for dim in sorted({d for _, d in llm}):
        keys = [k for k in llm if k[1] == dim]
        both = [k for k in keys if llm[k]["ok"] and ref.get(k, {}).get("ok")]
        pairs = [(_field(json.loads(ref[k]["answer"]), dim), _field(json.loads(llm[k]["answer"]), dim)) for k in both]
        row: dict[str, Any] = {
            "requests": len(keys), "valid": sum(bool(llm[k]["ok"]) for k in keys), "compared": len(pairs),
            "errors": dict(Counter((llm[k]["error"] or "?").split(":")[0] for k in keys if not llm[k]["ok"])),
            "exact": round(sum(a == b for a, b in pairs) / len(pairs), 3) if pairs else None,
            "llm_answers": dict(Counter(str(b) for _, b in pairs).most_common(6)),
            "ref_answers": dict(Counter(str(a) for a, _ in pairs).most_common(6))}
        nums = [(a, b) for a, b in pairs if isinstance(a, int | float) and isinstance(b, int | float)
                and not isinstance(a, bool)]
        if nums:
            row["within_1"] = round(sum(abs(a - b) <= 1 for a, b in nums) / len(nums), 3)
            row["mean_abs_diff"] = round(sum(abs(a - b) for a, b in nums) / len(nums), 2)
        out[dim] = row
    return out


def agreement_line(rows: dict[str, dict[str, Any]]) -> str:
    """One report line: per dimension valid answers and agreement."""
    parts = []
    for dim, r in rows.items():
        s = f"{dim}: {r['valid']}/{r['requests']} valid"
        if r["exact"] is not None:
            s += f", agrees {r['exact']:.2f}"
        if "within_1" in r:
            s += f" (within 1: {r['within_1']:.2f})"
        parts.append(s)
    return "; ".join(parts)


def examples(ref: dict, llm: dict, n: int = 3) -> list[dict[str, str]]:
    """A few LLM answers next to the reference judge's, plus one failure if there is one."""
    ok = [k for k in sorted(llm) if llm[k]["ok"]][:n]
    bad = [k for k in sorted(llm) if not llm[k]["ok"]][:1]
    return [{"dimension": k[1], "lang": llm[k]["lang"], "doc": (llm[k]["text"] or "")[:100].replace("\n", " "),
             "llm": (llm[k]["answer"] or "")[:300], "ref": (ref.get(k, {}).get("answer") or "")[:200],
             "error": llm[k]["error"] or ""} for k in ok + bad]


def summary(ref_workdir: Path, llm_workdir: Path) -> str:
    """The demo report's line for the LLM judge step: its model, documents, valid answers and
    agreement with the reference (rule-based) judge; "" when the LLM judge wrote nothing."""
    llm = judgements(llm_workdir)
    if not llm:
        return ""
    model = Path(next(iter(llm.values()))["model"]).name
    docs = len({k[0] for k in llm})
    return f"{model}: {docs} documents; " + agreement_line(agreement(judgements(ref_workdir), llm))
