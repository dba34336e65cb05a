"""`q3 post <verb>`: post-training (long-CoT SFT, GRPO, distillation)."""

from q3.cli import verb

VERBS = {
    "sft": verb("train.post.sft:cli", "Supervised fine-tuning on chat data (Qwen3 template, thinking modes)."),
    "grpo": verb("train.post.grpo:cli", "GRPO on query-verifier pairs."),
    "distill": verb("train.post.distill:cli", "Strong-to-weak distillation (off-policy, then on-policy)."),
}
