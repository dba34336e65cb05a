"""Post-training (issue 12): chat SFT data, thinking-mode fusion, SFT and its evals.

- `train.post.chat`: Qwen3 chat-template rendering of conversations into token ids and a loss mask
  over exactly the assistant tokens the model produces at inference; sequence packing with
  block-diagonal attention masks; reading chat JSONL (OpenAI `messages`, synth's cold-start rows).
- `train.post.fusion`: thinking-mode fusion data (Qwen3 report): `/think` and `/no_think` samples,
  multi-turn dialogues with mixed flags, and thinking-budget samples.

See docs/post.md.
"""
