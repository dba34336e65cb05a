"""`q3 train <verb>`: megatron-core Qwen3 pretraining, checkpoints, HF export/import, generation."""

from q3.verbs import verb

VERBS = {
    "pretrain": verb("train.pretrain:cli", "Pretrain a stage from its manifest (runs under torchrun too).",
                     precheck="train.config:precheck_pretrain"),
    "export-hf": verb("train.hf_export:cli_export", "Write a Hugging Face Qwen3 / Qwen3-MoE folder from a checkpoint.",
                      precheck="train.config:precheck_export"),
    "import-hf": verb("train.hf_export:cli_import", "Load a Hugging Face Qwen3 folder into a megatron-core checkpoint.",
                      precheck="train.config:precheck_import"),
    "generate": verb("train.generate:cli", "Sample from a checkpoint (thinking / non-thinking presets).",
                     precheck="train.config:precheck_generate"),
}
