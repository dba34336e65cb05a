"""What a verb raises when the user should see one line, not a traceback, and which exit code follows.

- `q3.config.ConfigError` (exit 2): a usage error -- a bad key or value, a missing input file.
- `RunFailed` (exit 1): the run went through but produced nothing useful. The one rule, applied by
  every verb that reads rows or asks an endpoint: a run fails when *every* input row was rejected at
  read (or there were none), or when an endpoint answered nothing. `allow_empty=true` accepts an
  empty result (exit 0, with a warning), e.g. for a shard that may legitimately be empty.

`q3.cli.main` and `q3.verbs.script_main` print the message as `q3 <area> <verb>: <message>` and exit.
"""

from __future__ import annotations

from pathlib import Path

from q3.config import ConfigError


class InputMissing(ConfigError, FileNotFoundError):
    """An input file or directory is not there (or an earlier step has not run): a usage error
    (exit 2) that is still a FileNotFoundError for code that catches that."""


class RunFailed(RuntimeError):
    """The run produced nothing useful; the message says what, where and how to fix it."""


ALLOW_EMPTY_HINT = "allow_empty=true accepts an empty result"


def require_nonempty(count: int, what: str, why: str, *, allow_empty: bool = False) -> None:
    """Fail the run when `count` is 0 (`what`: '0 documents kept', `why`: the cause and the fix)."""
    if count > 0:
        return
    msg = f"{what}: {why}"
    if allow_empty:
        from q3.log import get_logger

        get_logger("q3").warning("%s (allow_empty=true: not a failure)", msg)
        return
    raise RunFailed(f"{msg} ({ALLOW_EMPTY_HINT})")


def require_path(path: str | Path | None, key: str, hint: str = "") -> Path:
    """An input path that must exist: a one-line usage error naming the key otherwise."""
    if path is None or str(path) == "":
        raise ConfigError(f"{key}= is required{'; ' + hint if hint else ''}")
    p = Path(path)
    if not p.exists():
        raise InputMissing(f"{key}={path}: no such file or directory{'; ' + hint if hint else ''}")
    return p
