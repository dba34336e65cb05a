"""What `q3 <area> <verb> --help` and `--print-config` show, generated from the verb's config model.

Every verb loads its config first thing with `q3.config.load_config`. While the CLI asks for help
or for the resolved config, `load_config` hands the model (and the loaded config) to this module
instead of returning, and the verb stops there (`ConfigShown`): no verb needs its own help code,
and the help can never drift from the keys the verb accepts.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from contextvars import ContextVar
from typing import Any

import yaml
from pydantic import BaseModel

from q3.paths import CONF_DIR

# "help" | "print" while the CLI runs a verb only to describe it
SHOW: ContextVar[str | None] = ContextVar("q3_show", default=None)
_COMMENT = re.compile(r"^\s{4}(\w+)\s*:[^#]*#\s*(.+)$")


class ConfigShown(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by load_config after printing help or the resolved config: the verb stops there."""


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The `# ...` comment after each field in the class source (subclasses win)."""
    out: dict[str, str] = {}
    for cls in reversed(model.__mro__):
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or cls is BaseModel:
            continue
        try:
            lines = inspect.getsource(cls).splitlines()
        except (OSError, TypeError):
            continue
        for line in lines:
            m = _COMMENT.match(line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


def type_name(annotation: Any) -> str:
    """`int | None`, `think | no_think`, `list[str]`: the type as a user types values."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join("None" if a is type(None) else type_name(a) for a in args)
    if origin is not None and args:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _default(f) -> Any:
    if f.default_factory is not None:
        v = f.default_factory()
        return v.model_dump(mode="json") if isinstance(v, BaseModel) else v
    return None if f.is_required() else f.default


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model of a nested section (`optim: OptimConfig`), not of a union like `str | ModelConfig`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _own_fields_first(model: type[BaseModel]) -> list[str]:
    """Field names, the most derived class's first: a verb's own keys before the shared ones."""
    order: list[str] = []
    for cls in model.__mro__:
        for name in getattr(cls, "__annotations__", {}):
            if name in model.model_fields and name not in order:
                order.append(name)
    return order + [n for n in model.model_fields if n not in order]


def key_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, meaning) for every key; sections' fields as dotted keys."""
    rows, notes = [], field_comments(model)
    for name in _own_fields_first(model):
        f = model.model_fields[name]
        sub = _section(f.annotation)
        if sub is not None and sub.model_fields:
            default = _default(f) or {}
            doc = (sub.__doc__ or "").strip().splitlines()
            rows.append((prefix + name, "section", "", notes.get(name, doc[0] if doc else "")))
            for key, typ, value, meaning in key_rows(sub, f"{prefix}{name}."):
                leaf = key[len(prefix + name) + 1:]
                if isinstance(default, dict) and leaf in default:
                    value = repr(default[leaf])
                rows.append((key, typ, value, meaning))
            continue
        value = "(required)" if f.is_required() else repr(_default(f))
        rows.append((prefix + name, type_name(f.annotation), value, notes.get(name, "")))
    return rows


def help_text(model: type[BaseModel], kind: str) -> str:
    configs = sorted(p.stem for p in (CONF_DIR / kind).glob("*.yaml")) if (CONF_DIR / kind).is_dir() else []
    rows = key_rows(model)
    w0 = max(len(r[0]) for r in rows) if rows else 0
    w1 = min(max((len(r[1]) for r in rows), default=0), 28)
    w2 = min(max((len(r[2]) for r in rows), default=0), 24)
    lines = [f"configs (--config NAME, under conf/{kind}/): {', '.join(configs) or '(none)'}", "",
             "keys (key=value overrides; dotted keys set one field of a section):"]
    for key, typ, default, meaning in rows:
        lines.append(f"  {key:<{w0}}  {typ[:w1]:<{w1}}  {default[:w2]:<{w2}}  {meaning}".rstrip())
    return "\n".join(lines)


def print_config(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, default_flow_style=None, width=100)
