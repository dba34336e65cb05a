"""`q3 data <verb>`: the corpus pipeline's verbs (each also a spark-submit module)."""

from q3.verbs import verb

VERBS = {
    "sample": verb("dataproc.sample:cli", "Build the real multilingual sample corpus (Debian manpages + Python sources)."),
    "run": verb("dataproc.jobs.pipeline:cli", "Run ingest -> normalise -> language ID -> quality filters -> PII (Spark)."),
    "dedup": verb("dataproc.jobs.dedup:cli", "Exact + MinHash-LSH fuzzy + line-level dedup (Spark)."),
    "decontam": verb("dataproc.jobs.decontam:cli", "Remove documents overlapping evaluation sets by n-grams (Spark)."),
    "estimate": verb("dataproc.estimate:cli", "Cost model to a token target: core-hours, shuffle bytes, cluster size."),
}
