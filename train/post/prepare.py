"""`q3 post prepare`: post-training data from RL query-verifier pairs, with nothing but files.

From `q3 synth verifiable` pairs (each with a verified reference solution) it writes:

- `coldstart.jsonl`: long-CoT cold-start SFT rows — the reference's worked steps as the reasoning,
  its final line as the answer (`<think>\\n{steps}\\n</think>\\n\\n{answer}`), OpenAI `messages`
  rows with provenance; the same format `q3 synth coldstart` writes from a teacher model;
- `fusion.jsonl`: thinking-mode fusion rows built from those (`train.post.fusion`);
- `eval_pairs.jsonl`: held-out pairs (by a hash of the id, never in the SFT files) for `q3 post eval`
  and the RL query set.

    q3 post prepare pairs=data/synth/verifiable/pairs.jsonl out=data/post
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field

from q3.atomic import atomic_dir
from q3.config import ConfigError, Q3Config, config_hash, load_config
from q3.log import get_logger, print_table
from q3.paths import data_dir

log = get_logger("q3.post.prepare")


class PrepareConfig(Q3Config):
    pairs: str                                   # `q3 synth verifiable` pairs.jsonl
    out: str = ""                                # default: <data>/post
    held_out: float = Field(default=0.2, ge=0.0, lt=1.0)   # share of pairs kept for eval / RL
    domains: list[str] = Field(default_factory=lambda: ["math", "logic"])   # with worked references
    # FusionConfig overrides (train.post.fusion); the references' reasoning is short, so are the budgets
    # multi-turn dialogues are where mode following is hard (a flag carried over from an earlier turn)
    fusion: dict = Field(default_factory=lambda: {"budget": 0.15, "budget_tokens": [4, 8], "multi_turn": 0.4})
    fusion_copies: int = Field(default=3, ge=1)  # fusion passes over the cold-start rows (seed, seed+1, ...)


def held_out(query: str, share: float) -> bool:
    """A stable split by query text: the same query (even under two ids) is held out whatever the
    file order or size, so no held-out query reaches the SFT files."""
    h = int(hashlib.sha256(query.strip().encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return h < share


def reasoning_row(item: dict) -> dict | None:
    """A cold-start SFT row from a pair whose reference is `steps\\n\\nfinal answer line`."""
    ref = (item.get("reference") or "").strip()
    if "\n\n" not in ref:
        return None
    steps, answer = ref.rsplit("\n\n", 1)
    if not steps.strip() or not answer.strip():
        return None
    return {"messages": [{"role": "user", "content": item["query"]},
                         {"role": "assistant", "content": f"<think>\n{steps.strip()}\n</think>\n\n{answer.strip()}"}],
            "id": item.get("id"), "source": f"reference:{item.get('source', '')}", "domain": item.get("domain")}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def prepare(cfg: PrepareConfig) -> dict:
    from synth.generators.schema import read_pairs
    from train.post.chat import read_chat_jsonl
    from train.post.fusion import FusionConfig, build_fusion

    src = Path(cfg.pairs)
    if not src.is_file():
        raise ConfigError(f"pairs file not found: {src} (make it with `q3 synth verifiable`)")
    try:
        items = read_pairs(str(src))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{src}: not a JSONL file of RL pairs ({e})") from None
    missing = [i for i, it in enumerate(items) if not isinstance(it, dict) or "query" not in it or "id" not in it]
    if missing:
        raise ConfigError(f"{src}: line {missing[0] + 1} is not an RL pair (needs id, query, verifier_type, ...)")
    evals = [it for it in items if held_out(it["query"], cfg.held_out)]
    train = [it for it in items if not held_out(it["query"], cfg.held_out) and it.get("domain") in cfg.domains]
    cold = [r for r in (reasoning_row(it) for it in train) if r is not None]
    if not cold:
        raise ConfigError(f"{src}: no pair of domains {cfg.domains} has a worked reference to train on")
    fcfg = FusionConfig.model_validate(cfg.fusion)
    out = Path(cfg.out) if cfg.out else data_dir() / "post"
    stats: dict = {"pairs": len(items), "held_out": len(evals), "coldstart": len(cold), "config": config_hash(cfg)}
    with atomic_dir(out, stats) as tmp:
        write_jsonl(tmp / "coldstart.jsonl", cold)
        write_jsonl(tmp / "eval_pairs.jsonl", evals)
        rows = read_chat_jsonl(tmp / "coldstart.jsonl")
        for r in rows:                                        # provenance: coldstart.jsonl:<line>
            r["source"] = "coldstart.jsonl:" + r["source"].rsplit(":", 1)[1]
        fusion, fstats = [], []
        for c in range(cfg.fusion_copies):
            f, st = build_fusion(rows, fcfg.model_copy(update={"seed": fcfg.seed + c}))
            fusion += f
            fstats.append(st)
        write_jsonl(tmp / "fusion.jsonl", fusion)
        stats.update(fusion=len(fusion), fusion_stats=fstats)
    print_table(f"post prepare: {out}", ["file", "rows"],
                [("coldstart.jsonl", len(cold)), ("fusion.jsonl", len(fusion)), ("eval_pairs.jsonl", len(evals))])
    return {"out": str(out), **stats}


def cli(config: str | None, overrides: list[str]) -> int:
    """Cold-start, fusion and held-out eval files from RL pairs: q3 post prepare pairs=pairs.jsonl out=DIR"""
    prepare(load_config(PrepareConfig, "post", config, overrides))
    return 0
