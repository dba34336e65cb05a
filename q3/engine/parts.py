"""Part-level resume for chunked jobs: each part (shard, chunk) of a run is its own keyed commit.

A job whose run takes long (synth: thousands of LLM requests) commits its work part by part, so a
killed run redoes only the part that was in flight. Each part's key derives from the run's
`JobKey`: the same input fingerprint and code version, the config extended by the part's name and
what it covers (e.g. its seed ids). A changed input, config or code therefore redoes every part,
an unchanged rerun reuses every committed one, and a changed shard plan redoes the parts it moved.

    key = job_key("synth", cfg, inputs=[seeds])
    stats = run_committed(out / "shards" / "shard-00003", part_key(key, "shard-00003", ids), body)

`JobKey` is a frozen dataclass of strings: `key_from_dict(asdict(key))` rebuilds it in a Spark
worker, so a part key can be derived where the part runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

from q3.commit import JobKey


def part_key(key: JobKey, part: str, covers: Any = None) -> JobKey:
    """The key of part `part` (covering `covers`, JSON-able) of a run keyed `key`."""
    blob = json.dumps([key.config, part, covers], sort_keys=True, separators=(",", ":"), default=str)
    return JobKey(f"{key.kind}:part", hashlib.sha256(blob.encode()).hexdigest()[:16], key.input, key.code)


def key_to_dict(key: JobKey) -> dict[str, str]:
    return asdict(key)


def key_from_dict(d: dict[str, str]) -> JobKey:
    return JobKey(**{k: d[k] for k in ("kind", "config", "input", "code")})
