"""Reading JSONL inputs the way every verb should: a missing file or a line that is not a JSON
object is a one-line `ConfigError` naming `file:line`; blank lines are skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from q3.config import ConfigError


def read_jsonl(path: str | Path, what: str = "input") -> Iterator[tuple[str, dict]]:
    """(`file:line`, row) for every non-blank line of `path`; `what` names the file in errors."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}")
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{p}:{n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise ConfigError(f"{p}:{n}: not a JSON object")
            yield f"{p}:{n}", row


def read_text_rows(path: str | Path, what: str, hint: str) -> list[dict]:
    """The rows of a JSONL of documents: each must carry a string `text`; a row without one is a
    one-line error naming `file:line`, the fields the row has, and `hint` (how to fix it)."""
    rows = []
    for where, row in read_jsonl(path, what):
        if not isinstance(row.get("text"), str):
            raise ConfigError(f"{where}: no string field 'text' (the row has fields: "
                              f"{', '.join(row) or '(none)'}); {hint}")
        rows.append(row)
    return rows
