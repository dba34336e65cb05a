"""`q3 mix <verb>`: token datasets, stage-mixing manifests, mixture optimisation, scaling laws."""

from q3.verbs import verb

VERBS = {
    "tokenize": verb("dataproc.jobs.tokenise:cli", "Tokenise kept documents into Megatron .bin/.idx datasets (Spark)."),
    "build": verb("dataproc.mix.manifest:cli", "Write the S1/S2/S3 stage-mixing manifests (deterministic YAML)."),
    "optimize": verb("dataproc.mix.optimize:cli", "RegMix-style mixture optimisation with tiny proxy runs."),
    "sweep": verb("dataproc.mix.sweep:cli", "Run the grid of tiny trainer runs (budget x LR x batch) for scaling laws."),
    "scaling": verb("dataproc.mix.scaling:cli", "Fit LR/batch-size scaling laws from a sweep of tiny runs."),
}
