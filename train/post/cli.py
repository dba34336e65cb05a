"""`q3 post <verb>`: post-training on the shared trainer core and rollout engine."""

from q3.verbs import verb

VERBS = {
    "prepare": verb("train.post.prepare:cli", "Cold-start, fusion and held-out eval files from RL query-verifier pairs."),
    "sft": verb("train.post.sft:cli", "Chat SFT (long-CoT cold start, thinking-mode fusion) from a checkpoint."),
    "grpo": verb("train.post.grpo:cli", "Reasoning RL: GRPO on query-verifier pairs (clip-higher, dynamic sampling)."),
    "rl": verb("train.post.rl:cli", "General RL: GRPO over a task mix scored by rule, judge, reward-model and tool-use rewards."),
    "rm": verb("train.post.reward_model:cli", "Reward model: scalar head on Qwen3, Bradley-Terry on preference pairs."),
    "distill": verb("train.post.distill:cli", "Strong-to-weak distillation: off-policy (teacher replies, SFT), then on-policy logit KL."),
    "eval": verb("train.post.evals:cli", "pass@k on held-out verifiable sets, ThinkFollow, thinking-budget compliance."),
    "select": verb("train.post.select:cli", "RL query set: unseen in cold start, learnable (0 < pass rate < 1), hardest first, balanced."),
}
