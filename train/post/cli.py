"""`q3 post <verb>`: post-training on the shared trainer core and rollout engine."""

from q3.cli import verb

VERBS = {
    "prepare": verb("train.post.prepare:cli", "Cold-start, fusion and held-out eval files from RL query-verifier pairs."),
    "sft": verb("train.post.sft:cli", "Chat SFT (long-CoT cold start, thinking-mode fusion) from a checkpoint."),
    "rm": verb("train.post.reward_model:cli", "Reward model: scalar head on Qwen3, Bradley-Terry on preference pairs."),
    "eval": verb("train.post.evals:cli", "pass@k on held-out verifiable sets, ThinkFollow, thinking-budget compliance."),
}
