"""`q3 serve`: the area's one command, registered here so that `q3 serve` checks its `load=` path
before train/serve.py imports torch and megatron (a wrong path fails in a second, not 30)."""

from q3.verbs import verb

VERBS = {"": verb("train.serve:main", "OpenAI-compatible chat server on a checkpoint or HF export.",
                  precheck="train.config:precheck_serve")}
