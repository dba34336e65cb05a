"""Annotation dimensions: one YAML per dimension under conf/labeling/dimensions/ (adding one = a file).

A dimension is judged by an LLM (`source: judge`: rubric prompt + JSON schema of the answer) or
computed by rules (`source: rules`, see labeling/rules.py). Each of its `outputs` maps one key of
the answer to one field of the `labels` struct (q3.schemas.LABELS_TYPE; unknown fields go to
`labels.extra`) and gets its own classifier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from q3.config import Q3Config, load_yaml, validate
from q3.paths import CONF_DIR
from q3.schemas import LABELS_TYPE

LABEL_FIELDS = {f.name for f in LABELS_TYPE}


class Output(Q3Config):
    answer: str                                  # key in the judge's JSON answer
    field: str                                   # labels.<field>, or labels.extra[field]
    kind: Literal["score", "class", "flag"]      # score: ordinal numbers; class: categories
    labels: list[Any] | None = None              # scores: the allowed values

    @property
    def id(self) -> str:
        return self.field


class ClassifierSpec(Q3Config):
    type: Literal["fasttext", "linear"] = "fasttext"
    epoch: int = 25
    lr: float = 0.5
    wordNgrams: int = 2                          # noqa: N815 (fastText's own parameter names)
    dim: int = 32
    minCount: int = 1                            # noqa: N815


class Example(Q3Config):
    text: str                                    # a document extract, rendered with the dimension's prompt
    answer: dict[str, Any]                       # the judge's answer to it (JSON), sent as the assistant turn


class Dimension(Q3Config):
    name: str
    source: Literal["judge", "rules"]
    prompt: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    # few-shot turns before the real question: small models follow a shown answer, not a described one
    examples: list[Example] = Field(default_factory=list)
    rule: str | None = None
    outputs: list[Output]
    classifier: ClassifierSpec = Field(default_factory=ClassifierSpec)

    def class_labels(self, out: Output) -> list[str] | None:
        """Allowed classes of a `class` output, from the schema's enum."""
        prop = ((self.schema_ or {}).get("properties") or {}).get(out.answer) or {}
        return prop.get("enum")

    def render(self, text: str, language: str) -> str:
        labels = ", ".join(self.class_labels(self.outputs[0]) or [])
        return (self.prompt or "").format(text=text, language=language, labels=labels)


def dimensions_dir() -> Path:
    return CONF_DIR / "labeling" / "dimensions"


def load_dimensions(directory: str | Path | None = None, names: list[str] | None = None) -> list[Dimension]:
    d = Path(directory) if directory else dimensions_dir()
    if not d.is_absolute() and not d.is_dir() and (CONF_DIR.parent / d).is_dir():
        d = CONF_DIR.parent / d          # `conf/labeling/...` in a YAML works from any working directory
    dims = []
    for p in sorted(d.glob("*.yaml")):
        dim = validate(Dimension, load_yaml(p), str(p))
        if dim.source == "judge" and (not dim.prompt or not dim.schema_):
            raise ValueError(f"{p}: a judge dimension needs `prompt` and `schema`")
        if names is None or dim.name in names:
            dims.append(dim)
    if names:
        missing = set(names) - {x.name for x in dims}
        if missing:
            raise ValueError(f"unknown dimensions {sorted(missing)}; have {[x.name for x in load_dimensions(d)]}")
    return dims
