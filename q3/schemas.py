"""Arrow schemas of the files that areas exchange (DESIGN.md, Contracts).

Documents are Parquet with at least the columns of `DOC_SCHEMA`. Every stage writes kept rows and
rejected rows; rejected rows carry `reason` (why), `stage` (which stage) and `detail` (free text,
e.g. the survivor's id for a near duplicate, the benchmark's name for contamination).
"""

from __future__ import annotations

import hashlib

import pyarrow as pa

# Heuristic quality signals, one field each, filled by dataproc's filter stages. `score` is a
# single [0, 1] summary used where one number is needed (e.g. choosing a dedup survivor).
QUALITY_TYPE = pa.struct([
    ("score", pa.float32()),
    ("n_words", pa.int32()),
    ("n_lines", pa.int32()),
    ("mean_word_len", pa.float32()),
    ("symbol_word_ratio", pa.float32()),
    ("bullet_line_ratio", pa.float32()),
    ("ellipsis_line_ratio", pa.float32()),
    ("alpha_word_ratio", pa.float32()),
    ("stopword_count", pa.int32()),
    ("dup_line_frac", pa.float32()),
    ("dup_para_frac", pa.float32()),
    ("dup_line_char_frac", pa.float32()),
    ("dup_para_char_frac", pa.float32()),
    ("top_2gram_frac", pa.float32()),
    ("top_3gram_frac", pa.float32()),
    ("top_4gram_frac", pa.float32()),
    ("dup_5gram_frac", pa.float32()),
    ("dup_6gram_frac", pa.float32()),
    ("dup_7gram_frac", pa.float32()),
    ("dup_8gram_frac", pa.float32()),
    ("dup_9gram_frac", pa.float32()),
    ("dup_10gram_frac", pa.float32()),
    ("line_punct_ratio", pa.float32()),
    ("short_line_ratio", pa.float32()),
    ("char_dup_ratio", pa.float32()),
    ("list_ratio", pa.float32()),
    ("hash_word_ratio", pa.float32()),
    ("ellipsis_word_ratio", pa.float32()),
    ("c4_sentences", pa.int32()),
    ("c4_line_ratio", pa.float32()),          # lines C4's line rules keep / lines
    ("failed", pa.list_(pa.string())),        # every rule the document fails (first one = reason)
    ("pii_email", pa.int32()),
    ("pii_ip", pa.int32()),
    ("pii_phone", pa.int32()),
    ("pii_card", pa.int32()),
])

# Annotation dimensions, filled by labeling/. `versions` records the model behind each label.
LABELS_TYPE = pa.struct([
    ("edu_score", pa.float32()),
    ("domain", pa.string()),
    ("quality_score", pa.float32()),
    ("safety", pa.string()),
    ("safety_severity", pa.int8()),
    ("reasoning_score", pa.float32()),
    ("has_code", pa.bool_()),
    ("has_math", pa.bool_()),
    ("extra", pa.map_(pa.string(), pa.string())),
    ("versions", pa.map_(pa.string(), pa.string())),
])

DOC_SCHEMA = pa.schema([
    ("id", pa.string()),            # stable content hash of the raw document (content_id)
    ("text", pa.string()),
    ("source", pa.string()),        # dataset / reader name
    ("url", pa.string()),           # URL or file path + member, whatever locates the original
    ("lang", pa.string()),          # ISO 639-3 + ISO 15924 script, e.g. eng_Latn, cmn_Hans
    ("lang_score", pa.float32()),
    ("n_chars", pa.int64()),
    ("quality", QUALITY_TYPE),
    ("labels", LABELS_TYPE),
    ("dup_cluster", pa.string()),   # id of the cluster's survivor; null until dedup
    ("n_tokens", pa.int64()),       # Qwen3 tokens; null until tokenisation
])

REJECT_FIELDS = [
    ("reason", pa.string()),
    ("stage", pa.string()),
    ("detail", pa.string()),
]

# What a stage function returns: the input rows, same order, plus reason/stage/detail (null = kept).
STAGE_OUTPUT_SCHEMA = pa.schema(list(DOC_SCHEMA) + [pa.field(n, t) for n, t in REJECT_FIELDS])
REJECTED_SCHEMA = STAGE_OUTPUT_SCHEMA

UNKNOWN_LANG = "und_Zyyy"


def content_id(data: str | bytes) -> str:
    """Stable content hash used as document id: blake2b-128 of the UTF-8 (or raw) bytes."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def empty_docs() -> pa.Table:
    return DOC_SCHEMA.empty_table()
