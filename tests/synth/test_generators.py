"""Generators: N items, deterministic, verified (reference accepted, perturbed rejected)."""

import json

from q3.atomic import is_committed
from synth.generators import VerifiableConfig, generate, make_item, write_pairs
from synth.generators.schema import FIELDS
from synth.verifiers import verify


def test_generators_are_deterministic_by_seed():
    a = [make_item(7, i, {"math": 1, "code": 1, "logic": 1}, [1, 2, 3]).to_json() for i in range(30)]
    b = [make_item(7, i, {"math": 1, "code": 1, "logic": 1}, [1, 2, 3]).to_json() for i in range(30)]
    c = [make_item(8, i, {"math": 1, "code": 1, "logic": 1}, [1, 2, 3]).to_json() for i in range(30)]
    assert a == b and a != c


def test_every_domain_and_difficulty_verifies_reference_and_rejects_perturbed():
    cfg = VerifiableConfig(n=90, seed=3, check=False)
    items, _ = generate(cfg)
    seen = {(it.domain, it.difficulty) for it in items}
    assert seen == {(d, k) for d in ("math", "code", "logic") for k in (1, 2, 3)}
    for it in items:
        ok = verify(it.reference, it.verifier_type, it.verifier_data)
        bad = verify(it.perturbed, it.verifier_type, it.verifier_data)
        assert ok.score == 1.0, (it.source, ok)
        assert bad.score == 0.0 and bad.reason in ("wrong_answer", "tests_failed"), (it.source, bad)


def test_cli_writes_n_unique_items_in_one_schema(tmp_path):
    from synth.generators import cli
    out = tmp_path / "rl"
    assert cli(None, [f"out={out}", "n=30", "seed=1"]) == 0
    assert is_committed(out)
    rows = [json.loads(x) for x in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 30 and len({r["id"] for r in rows}) == 30
    assert all(list(r) == FIELDS for r in rows)
    assert {r["verifier_type"] for r in rows} == {"math", "code", "logic"}
    first = (out / "pairs.jsonl").read_bytes()
    # rerun: committed output with the same config is kept; force=true regenerates identical bytes
    write_pairs(VerifiableConfig(output=str(out), n=30, seed=1, force=True))
    assert (out / "pairs.jsonl").read_bytes() == first
