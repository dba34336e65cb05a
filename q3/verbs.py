"""Verbs, the core every area builds on: `verb` (a lazily imported `module:function`),
`parse_args`, `describe` (--help / --print-config) and `script_main` (a verb run as a script or a
module, e.g. `spark-submit dataproc/jobs/dedup.py ...` or `torchrun -m train.post.sft ...`).

Areas import this module, never `q3.cli`: the `q3` face (q3/cli.py) imports the areas, so the
dependency points one way only (tests/q3/test_layers.py checks it).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from q3.config import ConfigError
from q3.errors import RunFailed


def verb(target: str, doc: str, precheck: str | None = None) -> Callable:
    """A verb implemented at `module:function`, imported only when it runs. `precheck` (also
    `module:function(config, overrides)`, in a light module) validates the config and its paths
    before the verb's module is imported: a wrong path fails in a second, not after megatron's
    15 s of imports."""

    def run(config: str | None, overrides: list[str]) -> int | None:
        if precheck:
            module, func = precheck.split(":")
            getattr(importlib.import_module(module), func)(config, overrides)
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(config, overrides)

    run.__doc__ = doc
    run.target = target  # type: ignore[attr-defined]  # for --help's examples (the module docstring)
    return run


def parse_args(args: list[str]) -> tuple[str | None, list[str], str | None]:
    """Split verb arguments into (--config value, key=value overrides, "help" | "print" | None)."""
    config: str | None = None
    overrides: list[str] = []
    show = None
    it = iter(args)
    for a in it:
        if a in ("-h", "--help"):
            show = "help"
        elif a == "--print-config":
            show = show or "print"
        elif a in ("-c", "--config"):
            config = next(it, None)
            if config is None:
                raise ConfigError("--config needs a file or a config name")
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
        elif "=" in a and not a.startswith("-"):
            overrides.append(a)
        elif a.startswith("--") and len(a) > 2:
            key, _, value = a[2:].partition("=")
            raise ConfigError(f"unexpected argument {a!r}; overrides are key=value: "
                              f"{key}={value or next(it, '<value>')}")
        else:
            raise ConfigError(f"unexpected argument {a!r}; overrides are key=value")
    return config, overrides, show


def examples(fn: Callable, command: str) -> list[str]:
    """Lines of the verb module's docstring that show the command (`q3 post sft ...`)."""
    target = getattr(fn, "target", None)
    if not target:
        return []
    doc = importlib.import_module(target.split(":")[0]).__doc__ or ""
    return [line.strip() for line in doc.splitlines() if line.strip().startswith(command)]


def describe(fn: Callable, command: str, config: str | None, overrides: list[str], show: str,
             doc: str | None = None) -> int:
    """--help (the verb's keys, types, defaults, meanings and configs) or --print-config (the resolved
    config): the verb runs only up to loading its config (`q3.describe`)."""
    from q3.describe import SHOW, ConfigShown

    if show == "help":
        print(f"{command}: {(doc or fn.__doc__ or '').strip()}\n\nusage: {command} [--config NAME|FILE] [key=value ...] "
              f"[--print-config]\n")
    token = SHOW.set(show)
    try:
        fn(config, overrides)
    except ConfigShown:
        pass
    finally:
        SHOW.reset(token)
    if show == "help":
        ex = examples(fn, command) or [f"{command} key=value ..."]
        print("\nexamples:\n" + "\n".join(f"  {x}" for x in [*ex[:3], f"{command} --print-config"]))
    return 0


def script_main(fn: Callable, doc: str | None, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run a verb as a script (`spark-submit dataproc/jobs/x.py --config X k=v`) or a module
    (`torchrun -m train.pretrain ...`), same arguments and exit codes as `q3 <area> <verb>`: 2 for a
    ConfigError, 1 for RunFailed, 130 when interrupted. `prog` names it in messages (default argv[0])."""
    prog = prog or sys.argv[0]
    try:
        config, overrides, show = parse_args(list(sys.argv[1:] if argv is None else argv))
        if show:
            return describe(fn, prog, config, overrides, show, doc)
        return int(fn(config, overrides) or 0)
    except ConfigError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
