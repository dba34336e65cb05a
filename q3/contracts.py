"""File contracts as code: the JSON files one area writes and another reads.

- `StageResult`: `<out_dir>/result.json` of a pretraining stage (written by train/pretrain.py, read
  by `q3 mix optimize` and `q3 mix sweep`). dataproc reads it through this model and never imports
  train/.
- `ProxyRunResult`: `q3 mix optimize`'s own `run-*/result.json` (a finished proxy: loss + mixture).
- `CommitMarker`: the common fields of `_Q3_SUCCESS` (q3/atomic.py writes it; jobs add their own
  fields, so extra keys are kept).
- `CorpusStats`: the document counts every corpus job's `stats.json` carries, under the names the
  jobs use today (`docs_in` / `input_docs`, ...); job-specific keys are kept.

`read_contract(Model, path)` turns a missing file, bad JSON or a missing/bad field into one line
naming the file and the field (`ContractError`, a `ConfigError`: exit 2 on the command line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from q3.atomic import MARKER
from q3.config import ConfigError
from q3.errors import InputMissing


class ContractError(ConfigError):
    """A contract file is unreadable or lacks a field (one line: the file and the field)."""


class Contract(BaseModel):
    """A JSON file's shape; extra keys are kept (writers may add fields before readers know them)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


M = TypeVar("M", bound=Contract)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    field = ".".join(str(x) for x in err["loc"]) or "(top level)"
    kind = "missing field" if err["type"] == "missing" else "bad field"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    return f"{kind} {field!r}: {err['msg']}{more}"


def parse_contract(model: type[M], data: Any, source: str | Path) -> M:
    """`data` (already parsed JSON) as `model`; `source` names it in the error."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ContractError(f"{source}: {model.__name__}: {_first_error(e)}") from None


def read_contract(model: type[M], path: str | Path) -> M:
    """The JSON file at `path` as `model`, or a one-line error naming the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise InputMissing(f"{p}: no such file ({model.__name__} expected)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"{p}: not valid JSON ({e})") from None
    return parse_contract(model, data, p)


# ---------------------------------------------------------------- training

class StageResult(Contract):
    """result.json of one pretraining stage (train/pretrain.py), written by rank 0 at the end."""

    stage: str
    steps: int = Field(ge=0)
    tokens: int = Field(ge=0)
    lr: float
    global_batch_size: int = Field(ge=1)
    seq_length: int = Field(ge=1)
    n_params: int = Field(ge=1)
    n_params_active: int = Field(ge=1)
    flops_per_token: float = Field(gt=0)
    flops: float = Field(ge=0)
    final_train_loss: float | None = None
    eval: dict[str, float] = Field(default_factory=dict)       # "start"/"end" held-out loss
    split: str
    validation: list[str] = Field(default_factory=list)
    validation_samples_per_dataset: int = 0
    checkpoint: str
    # pooled validation loss; present when `validation` was set and the split has a valid share.
    # Per-dataset losses are extra keys `val_loss/<dataset>` (see `val_losses`).
    val_loss: float | None = None

    @property
    def val_losses(self) -> dict[str, float]:
        return {k.split("/", 1)[1]: float(v) for k, v in (self.model_extra or {}).items()
                if k.startswith("val_loss/")}

    def metric(self, key: str, source: str | Path = "result.json") -> float:
        """A loss by name (`val_loss`, `val_loss/<dataset>`, `final_train_loss`), or a one-line error."""
        value = getattr(self, key, None) if key in type(self).model_fields else (self.model_extra or {}).get(key)
        if value is None:
            raise ContractError(f"{source}: StageResult: missing field {key!r}; set validation=[...] and a "
                                "split with a valid share")
        return float(value)


class ProxyRunResult(Contract):
    """`q3 mix optimize`'s `run-*/result.json`: a finished proxy run (resume reuses it)."""

    val_loss: float
    weights: dict[str, float]


# ---------------------------------------------------------------- corpus jobs

class JobKeyFields(Contract):
    """The key a keyed commit stores in its marker (`job_key`): what the output was computed from."""

    id: str
    kind: str | None = None
    config: str | None = None
    input: str | None = None
    code: str | None = None


class CommitMarker(Contract):
    """`_Q3_SUCCESS` of a committed output. Every field is optional: markers written before
    `commit_id`/`job_key` existed still read; jobs' own fields (counts, stage, ...) are extra keys."""

    commit_id: str | None = None
    job_key: JobKeyFields | None = None
    stage: str | None = None
    config_hash: str | None = None
    input: str | None = None


def read_commit_marker(out: str | Path) -> CommitMarker:
    """The marker of the committed output directory `out`."""
    return read_contract(CommitMarker, Path(out) / MARKER)


class CorpusStats(Contract):
    """The counts in a corpus job's stats.json. The pipeline writes `input_docs`/`kept_docs`/
    `rejected_docs`, dedup and decontam `docs_in`/`docs_kept`; both spellings read."""

    docs_in: int = Field(ge=0, validation_alias=AliasChoices("docs_in", "input_docs"))
    docs_kept: int | None = Field(default=None, ge=0, validation_alias=AliasChoices("docs_kept", "kept_docs"))
    docs_rejected: int | None = Field(default=None, ge=0,
                                      validation_alias=AliasChoices("docs_rejected", "rejected_docs"))
    seconds: float | None = None

    def check_balance(self, source: str | Path = "stats.json") -> None:
        """kept + rejected = input where a job reports both (the engine's invariant)."""
        if self.docs_kept is not None and self.docs_rejected is not None \
                and self.docs_kept + self.docs_rejected != self.docs_in:
            raise ContractError(f"{source}: {self.docs_kept} kept + {self.docs_rejected} rejected != "
                                f"{self.docs_in} in")


def read_stats(path: str | Path) -> CorpusStats:
    """`stats.json` of a corpus job (or its output directory)."""
    p = Path(path)
    return read_contract(CorpusStats, p / "stats.json" if p.is_dir() else p)


__all__ = ["CommitMarker", "ContractError", "CorpusStats", "JobKeyFields", "ProxyRunResult", "StageResult",
           "parse_contract", "read_commit_marker", "read_contract", "read_stats"]
