"""`q3 label train`: per-output classifiers trained on judge labels, with held-out agreement.

Two model types, chosen per dimension (`classifier.type` in its YAML) or for all (`train.classifier`):
- `fasttext`: fastText supervised (word n-grams + subwords; milliseconds per document on CPU);
- `linear`: hashed word uni/bi-gram + character 3-gram features and a softmax-regression head
  trained in numpy (no extra dependency), the "embedding + linear head" option.

Scores (0-5) are learnt as ordinal classes and predicted as the probability-weighted mean, so the
label is a float. Agreement with the judge is measured on a held-out split (by a hash of the id):
accuracy and macro-F1 for classes, Spearman's rho (and accuracy of the rounded score) for scores,
overall and per language. A model's version is the sha256 (12 hex) of its file.

Output: <output>/models/{<field>.bin|.npz, models.json, metrics.json} (committed atomically).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from labeling.config import LabelConfig
from labeling.dimensions import ClassifierSpec, Dimension, Output, load_dimensions
from q3.atomic import atomic_dir, atomic_write_text
from q3.config import config_hash, load_config
from q3.errors import InputMissing, require_nonempty
from q3.log import get_logger, print_table

log = get_logger("labeling.classifier")
_WS = re.compile(r"\s+")


def clean(text: str, max_chars: int) -> str:
    """fastText input: one line, lower case, leading `max_chars` characters."""
    return _WS.sub(" ", text[:max_chars]).strip().lower()


def file_version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


# ------------------------------------------------------------------------------- model types


class HashedLinear:
    """Hashed n-gram features -> softmax regression (numpy). Small, dependency-free, picklable."""

    def __init__(self, labels: list[str], n_features: int = 1 << 18, W: np.ndarray | None = None):
        self.labels, self.n_features = labels, n_features
        self.W = W if W is not None else np.zeros((n_features, len(labels)), np.float32)

    def featurize(self, texts: list[str]):
        from scipy.sparse import csr_matrix
        rows, cols = [], []
        for r, t in enumerate(texts):
            words = t.split()
            grams = words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]
            grams += [t[i:i + 3] for i in range(0, max(0, len(t) - 2), 2)]
            for g in grams:
                rows.append(r)
                cols.append(int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little")
                            % self.n_features)
        X = csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(texts), self.n_features))
        X.sum_duplicates()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel()) + 1e-9
        return csr_matrix(X.multiply(1 / norms[:, None]))

    def fit(self, texts: list[str], y: list[str], epochs: int = 200, lr: float = 2.0, l2: float = 1e-4) -> None:
        X = self.featurize(texts)
        Y = np.zeros((len(y), len(self.labels)), np.float32)
        idx = {lab: i for i, lab in enumerate(self.labels)}
        for r, lab in enumerate(y):
            Y[r, idx[lab]] = 1
        for _ in range(epochs):                          # full-batch gradient descent
            P = _softmax(X @ self.W)
            self.W -= lr * ((X.T @ (P - Y)) / len(y) + l2 * self.W)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        return _softmax(self.featurize(texts) @ self.W)

    def save(self, path: Path) -> None:
        with open(path, "wb") as f:
            np.savez_compressed(f, W=self.W, labels=np.array(self.labels), n_features=self.n_features)

    @classmethod
    def load(cls, path: Path) -> HashedLinear:
        z = np.load(path, allow_pickle=False)
        return cls([str(x) for x in z["labels"]], int(z["n_features"]), z["W"])


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Predictor:
    """A loaded model of one output; `predict(texts)` -> list of label values (str or float)."""

    entry: dict[str, Any]
    model: Any

    @classmethod
    def load(cls, entry: dict[str, Any], root: Path) -> Predictor:
        path = root / entry["file"]
        if entry["type"] == "fasttext":
            import fasttext
            fasttext.FastText.eprint = lambda *a, **k: None     # silence a load-time warning
            return cls(entry, fasttext.load_model(str(path)))
        return cls(entry, HashedLinear.load(path))

    def proba(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        max_chars = self.entry["max_chars"]
        cleaned = [clean(t or "", max_chars) for t in texts]
        if self.entry["type"] == "fasttext":
            labels = self.entry["labels"]
            k = len(labels)
            # The wrapper's predict() is broken under numpy 2 (multi-line probabilities come back
            # as copies of the first one, measured), so call the C++ binding per line: exact values.
            idx = {lab: i for i, lab in enumerate(labels)}
            P = np.zeros((len(texts), k), np.float32)
            f = self.model.f
            for r, line in enumerate(cleaned):
                for p, lab in f.predict(line, k, 0.0, "strict"):
                    P[r, idx[lab.removeprefix("__label__")]] = p
            return labels, P
        return self.model.labels, self.model.predict_proba(cleaned)

    def predict(self, texts: list[str]) -> list[Any]:
        if not texts:
            return []
        labels, P = self.proba(texts)
        if self.entry["kind"] == "score":
            values = np.array([float(x) for x in labels])
            return [float(v) for v in (P / np.maximum(P.sum(1, keepdims=True), 1e-9)) @ values]
        return [labels[i] for i in P.argmax(1)]


# ----------------------------------------------------------------------------------- metrics


def spearman(a: list[float], b: list[float]) -> float | None:
    from scipy.stats import spearmanr
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def macro_f1(y: list[str], p: list[str]) -> float:
    f1s = []
    for c in sorted(set(y) | set(p)):
        tp = sum(1 for a, b in zip(y, p, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(y, p, strict=True) if a != c and b == c)
        fn = sum(1 for a, b in zip(y, p, strict=True) if a == c and b != c)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def agreement(kind: str, y: list[Any], p: list[Any]) -> dict[str, Any]:
    if not y:
        return {"n": 0}
    if kind == "score":
        yt = [float(v) for v in y]
        acc = float(np.mean([round(a) == round(b) for a, b in zip(yt, p, strict=True)]))
        return {"n": len(y), "spearman": spearman(yt, p), "accuracy_rounded": acc,
                "mae": float(np.mean(np.abs(np.array(yt) - np.array(p))))}
    return {"n": len(y), "accuracy": float(np.mean([a == b for a, b in zip(y, p, strict=True)])),
            "macro_f1": macro_f1([str(v) for v in y], [str(v) for v in p])}


# ---------------------------------------------------------------------------------- training


def heldout(id_: str, frac: float) -> bool:
    return int(hashlib.sha256(id_.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < frac


def train_output(dim: Dimension, out: Output, spec: ClassifierSpec, kind_type: str, rows: list[dict],
                 cfg: LabelConfig, dest: Path) -> tuple[dict[str, Any], dict[str, Any]] | None:
    examples = []
    for r in rows:
        ans = json.loads(r["answer"])
        if out.answer in ans:
            examples.append((r["id"], r["lang"], r["text"], str(ans[out.answer])))
    train = [e for e in examples if not heldout(e[0], cfg.train.holdout_frac)]
    test = [e for e in examples if heldout(e[0], cfg.train.holdout_frac)]
    if len(train) < cfg.train.min_examples:
        log.warning("%s: only %d valid training judgements (< %d); no classifier", out.field, len(train),
                    cfg.train.min_examples)
        return None
    if out.kind == "score":
        labels = [str(x) for x in (out.labels or sorted({e[3] for e in train}, key=float))]
    else:
        labels = dim.class_labels(out) or sorted({e[3] for e in train})
    present = sorted({e[3] for e in train}, key=lambda x: labels.index(x) if x in labels else len(labels))
    texts = [clean(e[2], cfg.train.max_chars) for e in train]
    ext = ".bin" if kind_type == "fasttext" else ".npz"
    path = dest / f"{out.field}{ext}"
    t0 = time.time()
    if kind_type == "fasttext":
        import fasttext
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as f:
            for t, e in zip(texts, train, strict=True):
                f.write(f"__label__{e[3]} {t}\n")
        model = fasttext.train_supervised(f.name, epoch=spec.epoch, lr=spec.lr, wordNgrams=spec.wordNgrams,
                                          dim=spec.dim, minCount=spec.minCount, thread=cfg.train.threads,
                                          seed=0, verbose=0)
        Path(f.name).unlink()
        model.save_model(str(path))
        present = [lab.removeprefix("__label__") for lab in model.get_labels()]
    else:
        lin = HashedLinear(present)
        lin.fit(texts, [e[3] for e in train])
        lin.save(path)
    entry = {"dimension": dim.name, "field": out.field, "kind": out.kind, "type": kind_type,
             "file": path.name, "version": f"{kind_type}:{file_version(path)}", "labels": present,
             "max_chars": cfg.train.max_chars, "n_train": len(train), "n_test": len(test),
             "train_seconds": round(time.time() - t0, 2)}
    pred = Predictor.load(entry, dest).predict([e[2] for e in test])
    metrics: dict[str, Any] = {"overall": agreement(out.kind, [e[3] for e in test], pred), "per_lang": {}}
    by_lang: dict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(test):
        by_lang[e[1]].append(i)
    for lang, idx in sorted(by_lang.items()):
        metrics["per_lang"][lang] = agreement(out.kind, [test[i][3] for i in idx], [pred[i] for i in idx])
    return entry, metrics


def run_train(cfg: LabelConfig) -> Path:
    t0 = time.time()
    judged = cfg.work() / "judgements" / "judgements.parquet"
    if not judged.exists():
        raise InputMissing(f"no judgements at {judged}: run `q3 label judge` first")
    table = pq.read_table(judged).to_pylist()
    model_name = table[0]["model"] if table else "?"
    dims = [d for d in load_dimensions(cfg.dimensions_dir, cfg.dimensions) if d.source == "judge"]
    out_dir = cfg.work() / "models"
    manifest: dict[str, Any] = {"judge_model": model_name, "outputs": {}}
    all_metrics: dict[str, Any] = {}
    meta = {"config_hash": config_hash(cfg), "judge_model": model_name}
    with atomic_dir(out_dir, meta) as tmp:
        for dim in dims:
            rows = [r for r in table if r["dimension"] == dim.name and r["ok"]]
            for out in dim.outputs:
                kind_type = dim.classifier.type if cfg.train.classifier == "per_dimension" else cfg.train.classifier
                res = train_output(dim, out, dim.classifier, kind_type, rows, cfg, tmp)
                if res is None:
                    continue
                entry, metrics = res
                manifest["outputs"][out.field] = entry
                all_metrics[out.field] = {"type": kind_type, "version": entry["version"], **metrics}
        require_nonempty(len(manifest["outputs"]), "0 classifiers trained",
                         f"{sum(1 for r in table if r['ok'])} valid judgements in {judged}, fewer than "
                         f"train.min_examples={cfg.train.min_examples} per output; judge more documents "
                         f"(judge.sample_size=) or check the judge's errors", allow_empty=cfg.allow_empty)
        atomic_write_text(tmp / "models.json", json.dumps(manifest, indent=2))
        atomic_write_text(tmp / "metrics.json", json.dumps(all_metrics, indent=2))
        meta["metrics"] = {k: v["overall"] for k, v in all_metrics.items()}
    print_agreement(all_metrics, f"agreement with judge {model_name} on held-out judgements")
    log.info("trained %d classifiers in %.1fs -> %s", len(manifest["outputs"]), time.time() - t0, out_dir)
    return out_dir


def _main_metric(a: dict[str, Any]) -> float | None:
    v = a.get("spearman") if "spearman" in a else a.get("macro_f1")
    return None if v is None else round(float(v), 3)


def print_agreement(all_metrics: dict[str, Any], title: str) -> None:
    rows = []
    for field, m in all_metrics.items():
        a = m["overall"]
        if "spearman" in a:
            rows.append((field, m["type"], a["n"], "spearman rho", _main_metric(a), round(a["accuracy_rounded"], 3)))
        elif "accuracy" in a:
            rows.append((field, m["type"], a["n"], "macro-F1", _main_metric(a), round(a["accuracy"], 3)))
    print_table(title, ["output", "model", "n test", "metric", "value", "accuracy"], rows)
    langs = sorted({lang for m in all_metrics.values() for lang in m["per_lang"]})
    fields = list(all_metrics)
    print_table("per language (spearman rho for scores, macro-F1 for classes; None = constant labels)",
                ["lang", "n"] + fields,
                [(lang, max(all_metrics[f]["per_lang"].get(lang, {}).get("n", 0) for f in fields))
                 + tuple(_main_metric(all_metrics[f]["per_lang"].get(lang, {})) for f in fields)
                 for lang in langs])


def cli(config: str | None, overrides: list[str]) -> int:
    """Train per-dimension classifiers on judge labels; report agreement."""
    cfg = load_config(LabelConfig, "labeling", config, overrides)
    run_train(cfg)
    return 0
