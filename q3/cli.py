"""The `q3` command line: `q3 <area> <verb> [--config FILE] [key=value ...]`.

This module only dispatches. Each area module exposes `VERBS`, a dict from verb name to a
function `fn(config: str | None, overrides: list[str]) -> int | None` (built with `q3.verbs.verb`);
its docstring is the help. This is the face: it imports the areas, and no area imports it.
Areas are imported lazily so `q3 data ...` never imports torch and `q3 train ...` never imports
pyspark.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

from q3.verbs import parse_args, script_main

__all__ = ["AREAS", "main", "parse_args"]

AREAS: dict[str, tuple[str, str]] = {
    "data": ("dataproc.cli", "corpus pipeline: sample, run, dedup, decontam, estimate"),
    "label": ("labeling.cli", "multi-dimension annotation: judge, train classifiers, apply"),
    "synth": ("synth.cli", "synthetic data: generate, verifiable generators, cold-start builder"),
    "mix": ("dataproc.mix_cli", "tokenise into Megatron datasets, build stage manifests, optimise mixture"),
    "train": ("train.cli", "megatron-core Qwen3 pretraining, export-hf, import-hf, generate"),
    "post": ("train.post.cli", "post-training: data, SFT, GRPO, general RL, reward model, distillation, evals"),
    "serve": ("train.serve_cli", "OpenAI-compatible chat server on a checkpoint"),
    "demo": ("q3.demo", "the whole system end to end on the sample corpus, on CPU"),
}

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
    return script_main(fn, None, rest, prog=f"q3 {area} {verb}".rstrip())


if __name__ == "__main__":
    sys.exit(main())
