"""YAML configs with `key=value` overrides, validated by pydantic models that name the bad key.

Every area defines its config as a subclass of `Q3Config` and loads it with `load_config`:

    cfg = load_config(PipelineConfig, "pipeline", "default", ["filters.gopher.min_words=20"])

`ref` is either a path to a YAML file or the name of a file under `conf/<kind>/`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from q3.paths import CONF_DIR


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and what is allowed."""


class Q3Config(BaseModel):
    """Base of every config model: unknown keys are errors, not silently ignored.

    `aliases` maps deprecated key names to today's (dotted paths allowed on either side, e.g.
    `{"workdir": "output", "run.runner": "runner"}`): the old names keep working, with a one-line
    warning (docs/cli.md has the naming scheme: `input`, `output`, `runner`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    aliases: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and cls.aliases:
            return rename_aliases(cls, data, cls.__name__)
        return data


def _pop_path(data: dict[str, Any], path: str) -> tuple[bool, Any]:
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node:
        return True, node.pop(last)
    return False, None


def _has_path(data: dict[str, Any], path: str) -> bool:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def warn_deprecated(source: str, old: str, new: str) -> None:
    from q3.log import get_logger  # lazy: rich/tqdm only when there is something to say

    get_logger("q3.config").warning("%s: key %r is deprecated, use %r (the old name still works)",
                                    source, old, new)


def rename_aliases(model: type[BaseModel], data: dict[str, Any], source: str) -> dict[str, Any]:
    """A copy of `data` with `model.aliases`' old keys moved to their new names, each with a warning;
    both names given is an error (which one was meant is not knowable)."""
    aliases: dict[str, str] = getattr(model, "aliases", {}) or {}
    if not aliases:
        return data
    out = json.loads(json.dumps(data, default=str)) if any(_has_path(data, a) for a in aliases) else data
    for old, new in aliases.items():
        found, value = _pop_path(out, old)
        if not found:
            continue
        if _has_path(out, new):
            raise ConfigError(f"{source}: both {old!r} (deprecated) and {new!r} are set; keep {new!r}")
        warn_deprecated(source, old, new)
        _set_path(out, new, value)
        parent = old.rpartition(".")[0]
        if parent and _has_path(out, parent):
            node = out
            for part in parent.split("."):
                node = node[part]
            if node == {}:                  # `run: {runner: local}` -> nothing left of `run`
                _pop_path(out, parent)
    return out


def rename_override(model: type[BaseModel], override: str) -> str:
    """`workdir=x` -> `output=x` (with the deprecation warning) for an override of `model`."""
    key, sep, value = override.partition("=")
    for old, new in (getattr(model, "aliases", {}) or {}).items():
        k = key.strip()
        if k == old or k.startswith(old + "."):
            warn_deprecated("override", old, new)
            return f"{new}{k[len(old):]}{sep}{value}"
    return override


C = TypeVar("C", bound=BaseModel)


def resolve(kind: str, ref: str | Path) -> Path:
    """A config reference is a path to a YAML file, or a name under conf/<kind>/."""
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    candidate = CONF_DIR / kind / f"{ref}.yaml"
    if not candidate.exists():
        available = sorted(x.stem for x in (CONF_DIR / kind).glob("*.yaml"))
        raise ConfigError(f"no {kind} config named {ref!r}; available: {', '.join(available) or '(none)'}")
    return candidate


def load_yaml(path: str | Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b.c=value` overrides (values parsed as YAML: numbers, bools, lists) to a copy."""
    out = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {key!r}: {part!r} is not a section")
            node = nxt
        node[parts[-1]] = value
    return out


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """Walk the model along `loc` to list the keys allowed at that level."""
    current: Any = model
    for part in loc[:-1]:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(str(part))
        if field is None:
            return []
        current = _unwrap(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    for arg in typing.get_args(annotation) or ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def _format_error(model: type[BaseModel], err: dict, source: str) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, loc)
        close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{source}: unknown key {key!r}{hint}; allowed keys here: {', '.join(allowed)}"
    msg = f"{source}: {key}: {err['msg']}"
    expected = (err.get("ctx") or {}).get("expected")
    if expected:
        msg += f" (allowed: {expected})"
    if "input" in err and not isinstance(err["input"], dict):
        msg += f"; got {err['input']!r}"
    return msg


def with_nested_defaults(model: type[BaseModel], data: dict[str, Any]) -> dict[str, Any]:
    """Overriding one key of a nested section keeps the section's other defaults: for a field whose
    default is a model built with values (e.g. `optim: OptimConfig(lr=1e-5, weight_decay=0.0)`),
    `optim.lr=3e-4` yields lr 3e-4 *and* weight_decay 0.0, not the class default."""
    out = dict(data)
    for name, f in model.model_fields.items():
        key = f.alias or name
        if not isinstance(out.get(key), dict) or f.default_factory is None:
            continue
        default = f.default_factory()
        if isinstance(default, BaseModel):
            merged = {**default.model_dump(exclude_unset=True), **out[key]}
            out[key] = with_nested_defaults(type(default), merged)
    return out


def validate(model: type[C], data: dict[str, Any], source: str = "config") -> C:
    data = rename_aliases(model, data, source)
    try:
        return model.model_validate(with_nested_defaults(model, data))
    except ValidationError as e:
        lines = [_format_error(model, err, source) for err in e.errors()]
        if len(lines) == 1:                     # one mistake: one line
            raise ConfigError(f"invalid config: {lines[0]}") from None
        raise ConfigError("invalid config:\n  " + "\n  ".join(lines)) from None


def load_config(model: type[C], kind: str, ref: str | Path | None = None,
                overrides: list[str] | None = None) -> C:
    """Load conf/<kind>/<ref>.yaml (or a path), apply overrides, validate against `model`."""
    if ref is None:
        data: dict[str, Any] = {}
        source = f"{kind} defaults"
    else:
        path = resolve(kind, ref)
        data = load_yaml(path)
        source = str(path)
    from q3.describe import SHOW, ConfigShown, help_text, print_config

    show = SHOW.get()
    if show == "help":                      # `q3 <area> <verb> --help`: the keys, not a run
        print(help_text(model, kind))
        raise ConfigShown
    # old key names of the file first, then of the overrides: `inputs=...` on the command line
    # replaces a file's `input:` as `input=...` would
    data = rename_aliases(model, data, source)
    data = apply_overrides(data, [rename_override(model, o) for o in overrides or []])
    cfg = validate(model, data, source)
    if show == "print":                     # `--print-config`: the resolved config, not a run
        print(print_config(cfg), end="")
        raise ConfigShown
    return cfg


def config_hash(cfg: BaseModel | dict) -> str:
    """A stable short hash of a config's content, for provenance and cache keys."""
    payload = cfg.model_dump(mode="json") if isinstance(cfg, BaseModel) else cfg
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_names(given: list[str] | None, known: list[str] | tuple[str, ...], what: str) -> list[str]:
    """Names a user listed (e.g. `skip=[synth]`) must be known: a typo is a usage error that says the
    closest name, not a silently ignored entry. Returns `given` (or [])."""
    for name in given or []:
        if name not in known:
            close = difflib.get_close_matches(str(name), list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown {what} {name!r}{hint}; known: {', '.join(known)}")
    return list(given or [])
