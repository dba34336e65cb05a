"""The one JSONL schema of RL query-verifier pairs (what `q3 synth verifiable` writes and GRPO reads).

    {"id", "query", "verifier_type", "verifier_data", "domain", "subdomain", "difficulty", "source",
     "reference", "perturbed"}

`reference` is a response the verifier accepts; `perturbed` one it must reject (used by the
self-check and the tests, handy for reward debugging). `source` names the generator, its version
and the seed, so every item can be regenerated exactly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from q3.schemas import content_id

FIELDS = ["id", "query", "verifier_type", "verifier_data", "domain", "subdomain", "difficulty", "source",
          "reference", "perturbed"]


@dataclass
class RLPair:
    query: str
    verifier_type: str              # a key of synth.verifiers.VERIFIERS
    verifier_data: dict[str, Any]
    domain: str                     # math | code | logic
    subdomain: str
    difficulty: int                 # 1 (easy) .. 3 (hard)
    source: str
    reference: str
    perturbed: str
    id: str = field(default="")

    def __post_init__(self) -> None:
        if not self.id:
            self.id = content_id(self.query + "\x00" + json.dumps(self.verifier_data, sort_keys=True))[:16]

    def to_json(self) -> str:
        return json.dumps({k: asdict(self)[k] for k in FIELDS}, ensure_ascii=False, sort_keys=False)


def read_pairs(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
