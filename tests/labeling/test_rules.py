"""Rule-based code/math signals on real sample text and on small known cases."""

from __future__ import annotations

import json

from labeling.rules import apply_rules, code_signal, math_signal


def test_code_detection_on_real_sample(label_sample_dir):
    docs = [json.loads(x) for x in (label_sample_dir / "docs.jsonl").open(encoding="utf-8")]
    py = [d for d in docs if d["lang_hint"] == "code_Python"]
    prose = [d for d in docs if d["lang_hint"] in ("deu_Latn", "fra_Latn", "ukr_Cyrl", "nld_Latn")]
    assert len(py) >= 20 and len(prose) >= 40
    py_rate = sum(code_signal(d["text"])[0] for d in py) / len(py)
    prose_rate = sum(code_signal(d["text"])[0] for d in prose) / len(prose)
    print(f"has_code: python {py_rate:.2f}, translated man pages {prose_rate:.2f}")
    assert py_rate >= 0.8
    assert prose_rate <= 0.1


def test_math_detection():
    assert math_signal(r"The integral $\int_0^1 x^2 dx = 1/3$ and $\sum_i a_i \leq \sqrt{n}$ hold.")[0]
    assert math_signal("Let x = 3 * y + 2, then y = (x - 2) / 3 and z = x^2 + y^2 ≤ 10.")[0]
    assert not math_signal("Η σελίδα αυτή περιγράφει την εντολή ls και τις επιλογές της. " * 5)[0]
    assert not math_signal("Plain English prose about gardens, without any formulas at all. " * 5)[0]
    r = apply_rules("def f(x):\n    return x + 1\n\nclass A:\n    pass\nimport os\n")
    assert r["has_code"] and not r["has_math"] and r["code_line_frac"] > 0.5
