"""Post-training: long-CoT SFT, GRPO with verifiers, strong-to-weak distillation."""
