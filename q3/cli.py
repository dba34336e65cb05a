"""The `q3` command line: `q3 <area> <verb> [--config FILE] [key=value ...]`.

This module only dispatches. Each area module exposes `VERBS`, a dict from verb name to a
function `fn(config: str | None, overrides: list[str]) -> int | None`; its docstring is the help.
Areas are imported lazily so `q3 data ...` never imports torch and `q3 train ...` never imports
pyspark.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from q3.config import ConfigError

AREAS: dict[str, tuple[str, str]] = {
    "data": ("dataproc.cli", "corpus pipeline: sample, run, dedup, decontam"),
    "label": ("labeling.cli", "multi-dimension annotation: judge, train classifiers, apply"),
    "synth": ("synth.cli", "synthetic data: generate, verifiable generators, cold-start builder"),
    "mix": ("dataproc.mix_cli", "tokenise into Megatron datasets, build stage manifests, optimise mixture"),
    "train": ("train.cli", "megatron-core Qwen3 pretraining, export-hf, import-hf, generate"),
    "post": ("train.post.cli", "post-training: prepare data, chat SFT (cold start, fusion), eval"),
    "serve": ("train.serve", "OpenAI-compatible chat server on a checkpoint"),
    "demo": ("q3.demo", "the whole system end to end on the sample corpus, on CPU"),
}

def verb(target: str, doc: str) -> Callable:
    """A verb implemented at `module:function`, imported only when it runs."""

    def run(config: str | None, overrides: list[str]) -> int | None:
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(config, overrides)

    run.__doc__ = doc
    run.target = target  # type: ignore[attr-defined]  # for --help's examples (the module docstring)
    return run


USAGE = "usage: q3 <area> <verb> [--config FILE] [key=value ...] [--help | --print-config]"


def _usage() -> str:
    lines = [USAGE, "", "areas:"]
    lines += [f"  {name:<6} {desc}" for name, (_, desc) in AREAS.items()]
    lines += ["", "`q3 <area> --help` lists an area's verbs."]
    return "\n".join(lines)


def _load_verbs(area: str) -> dict[str, Callable]:
    module = importlib.import_module(AREAS[area][0])
    verbs = getattr(module, "VERBS", None)
    if verbs is None:  # single-command areas (serve, demo) expose main()
        return {"": module.main}
    return verbs


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


def script_main(fn: Callable, doc: str | None, argv: list[str] | None = None) -> int:
    """Run a verb as a script (`spark-submit dataproc/jobs/x.py --config X k=v`), same arguments."""
    try:
        config, overrides, show = parse_args(list(sys.argv[1:] if argv is None else argv))
        if show:
            return describe(fn, sys.argv[0], config, overrides, show, doc)
        return int(fn(config, overrides) or 0)
    except ConfigError as e:
        print(f"{sys.argv[0]}: {e}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    area, rest = argv[0], argv[1:]
    if area not in AREAS:
        print(f"q3: unknown area {area!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    verbs = _load_verbs(area)
    if "" in verbs:
        verb, fn = "", verbs[""]
    else:
        if not rest or rest[0] in ("-h", "--help"):
            print(f"usage: q3 {area} <verb> [--config FILE] [key=value ...]\n\nverbs:")
            for name, f in verbs.items():
                doc = (f.__doc__ or "").strip().splitlines()
                print(f"  {name:<12} {doc[0] if doc else ''}")
            return 0 if rest else 2
        verb, rest = rest[0], rest[1:]
        if verb not in verbs:
            print(f"q3 {area}: unknown verb {verb!r}; verbs: {', '.join(verbs)}", file=sys.stderr)
            return 2
        fn = verbs[verb]
    try:
        config, overrides, show = parse_args(rest)
        if show:
            return describe(fn, f"q3 {area} {verb}".rstrip(), config, overrides, show)
        rc = fn(config, overrides)
    except ConfigError as e:
        print(f"q3 {area} {verb}: {e}".rstrip(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
