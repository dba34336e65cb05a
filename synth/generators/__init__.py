"""Programmatic, verifiable RL query-verifier pairs (math, code, logic); no model needed.

    q3 synth verifiable n=200 seed=0 out=data/synth/verifiable

Deterministic: item i depends only on (seed, i), so the same config writes the same file. With
`check=true` every item is verified before it is written: the verifier must accept the reference
response and reject the perturbed one (items failing either are dropped and counted).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import Field

from q3.atomic import atomic_dir, is_committed, read_marker
from q3.config import Q3Config, config_hash, load_config
from q3.log import get_logger, print_table, progress
from q3.paths import data_dir
from synth.generators import code_gen, logic_gen, math_gen
from synth.generators.schema import RLPair, read_pairs

log = get_logger("synth.verifiable")
VERSION = "v1"


class VerifiableConfig(Q3Config):
    aliases = {"out": "output"}
    n: int = Field(200, ge=1)
    seed: int = 0
    domains: dict[str, float] = Field(default_factory=lambda: {"math": 0.4, "code": 0.3, "logic": 0.3})
    difficulties: list[int] = Field(default_factory=lambda: [1, 2, 3])
    n_tests: int = 10                 # hidden tests per code task (plus its edge cases)
    check: bool = True                # verify reference accepted / perturbed rejected before writing
    workers: int = 2                  # parallel verifications (code runs in the sandbox)
    output: str = ""                  # default: <data>/synth/verifiable
    force: bool = False               # rewrite even if a committed output with this config exists


def make_item(seed: int, i: int, domains: dict[str, float], difficulties: list[int], n_tests: int = 10,
              attempt: int = 0) -> RLPair:
    rng = random.Random(f"q3-verifiable:{seed}:{i}:{attempt}")
    names = sorted(domains)
    domain = rng.choices(names, weights=[domains[d] for d in names])[0]
    difficulty = rng.choice(sorted(difficulties))
    if domain == "math":
        sub = rng.choice(sorted(math_gen.SUBDOMAINS))
        query, ans, wrong, worked = math_gen.SUBDOMAINS[sub](rng, difficulty)
        return RLPair(query, "math", {"answer": ans}, "math", sub, difficulty,
                      f"q3-gen/math.{sub}@{VERSION}:seed={seed}:i={i}:a={attempt}",
                      f"{worked}\n\nThe final answer is \\boxed{{{ans}}}.",
                      f"{worked}\n\nThe final answer is \\boxed{{{wrong}}}.")
    if domain == "code":
        task, query, data, ref, bad = code_gen.make_code_item(rng, difficulty, n_tests)
        return RLPair(query, "code", data, "code", task.name, difficulty,
                      f"q3-gen/code.{task.name}@{VERSION}:seed={seed}:i={i}:a={attempt}", ref, bad)
    if domain == "logic":
        sub = rng.choice(sorted(logic_gen.SUBDOMAINS))
        query, data, ans, wrong = logic_gen.SUBDOMAINS[sub](rng, difficulty)
        return RLPair(query, "logic", data, "logic", sub, difficulty,
                      f"q3-gen/logic.{sub}@{VERSION}:seed={seed}:i={i}:a={attempt}",
                      f"Checking each case against the clues leaves one answer.\n\nFinal answer: \\boxed{{{ans}}}",
                      f"Checking each case against the clues leaves one answer.\n\nFinal answer: \\boxed{{{wrong}}}")
    raise ValueError(f"unknown domain {domain!r}; known: math, code, logic")


def self_check(item: RLPair) -> str:
    """'' if the verifier accepts the reference and rejects the perturbed response, else why not."""
    from synth.verifiers import verify

    good = verify(item.reference, item.verifier_type, item.verifier_data)
    if not good.passed:
        return f"reference rejected: {good.reason} {good.detail}"
    bad = verify(item.perturbed, item.verifier_type, item.verifier_data)
    if bad.passed:
        return "perturbed accepted"
    return ""


def generate(cfg: VerifiableConfig) -> tuple[list[RLPair], Counter]:
    """n unique items (a duplicate query is regenerated with the next attempt number)."""
    items: list[RLPair] = []
    seen: set[str] = set()
    for i in range(cfg.n):
        for attempt in range(20):
            item = make_item(cfg.seed, i, cfg.domains, cfg.difficulties, cfg.n_tests, attempt)
            if item.id not in seen:
                break
        seen.add(item.id)
        items.append(item)
    dropped: Counter = Counter()
    if cfg.check:
        with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
            verdicts = list(progress(pool.map(self_check, items), "verify", total=len(items)))
        kept = []
        for item, why in zip(items, verdicts, strict=True):
            if why:
                dropped[f"{item.domain}.{item.subdomain}: {why.split(':')[0]}"] += 1
                log.warning("dropping %s (%s): %s", item.id, item.source, why)
            else:
                kept.append(item)
        items = kept
    return items, dropped


def write_pairs(cfg: VerifiableConfig) -> Path:
    """Generate, check and atomically write <output>/pairs.jsonl; returns the output directory."""
    out = Path(cfg.output) if cfg.output else data_dir() / "synth" / "verifiable"
    # the hash of the old field name `out`: outputs committed before the rename stay up to date
    d = cfg.model_dump(mode="json", exclude={"output"}) | {"out": "", "force": False, "workers": 0}
    chash = config_hash(d)
    if is_committed(out) and not cfg.force and read_marker(out).get("config_hash") == chash:
        log.info("%s already committed for this config; nothing to do (force=true to redo)", out)
        return out
    t0 = time.time()
    items, dropped = generate(cfg)
    elapsed = time.time() - t0
    meta = {"config_hash": chash, "n": len(items), "dropped": dict(dropped), "seconds": round(elapsed, 2),
            "config": cfg.model_dump(mode="json")}
    with atomic_dir(out, meta) as tmp, (tmp / "pairs.jsonl").open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(item.to_json() + "\n")
    by = Counter((it.domain, it.subdomain, it.difficulty) for it in items)
    print_table(f"RL query-verifier pairs -> {out}/pairs.jsonl ({elapsed:.1f}s)",
                ["domain", "subdomain", "difficulty", "items"],
                [(d, s, k, n) for (d, s, k), n in sorted(by.items())])
    if dropped:
        print_table("dropped by the self-check", ["why", "items"], sorted(dropped.items()))
    return out


def cli(config: str | None, overrides: list[str]) -> int:
    """Emit programmatic RL query-verifier pairs (math, code, logic) as JSONL.

    keys: n, seed, domains{math,code,logic: weight}, difficulties, n_tests, check, workers, output, force
    """
    cfg = load_config(VerifiableConfig, "synth", config or _default_conf(), overrides)
    out = write_pairs(cfg)
    print(json.dumps({"output": str(out / "pairs.jsonl"), **{k: v for k, v in read_marker(out).items()
                                                          if k in ("n", "seconds", "dropped")}}))
    return 0


def _default_conf() -> str | None:
    from q3.paths import CONF_DIR
    return "verifiable" if (CONF_DIR / "synth" / "verifiable.yaml").exists() else None


__all__ = ["VerifiableConfig", "make_item", "generate", "write_pairs", "self_check", "cli", "read_pairs"]
