"""`format`: the reply's think block as its mode demands, the way Qwen3's template writes it.

Thinking mode (meta["thinking"] True, or the last /think flag, or no flag): the reply opens with
one `<think>` block, closes it once, and has an answer after it; an empty block counts as not
thinking. Non-thinking mode: the soft switch (/no_think, template's enable_thinking left on)
makes the model write the empty block `<think>\\n\\n</think>` itself, so it is required
(`empty_block: required`) or tolerated (`allowed`); under the hard switch
(meta["enable_thinking"] False) the prompt already ends with the empty block, so the reply must
carry no think tags at all. A reply cut at max_tokens (finish_reason "length") loses
`overlong_penalty`.
"""

from __future__ import annotations

import re
from typing import Literal

from q3.tokenizer import END_THINK, THINK
from train.post.rewards.base import (
    RewardInput,
    RewardOptions,
    RewardResult,
    options,
    register,
    result,
    wants_thinking,
)

_EMPTY = re.compile(r"\A<think>\s*</think>")


class FormatOptions(RewardOptions):
    empty_block: Literal["required", "allowed"] = "required"   # soft-switch no-think replies
    overlong_penalty: float = 0.0     # subtracted when finish_reason == "length"
    require_answer: bool = True       # some text after </think>


def check(reply: str, thinking: bool, hard_switch: bool, empty_block: str, require_answer: bool) -> str:
    """'ok' or the reason the reply is malformed for its mode."""
    opens, closes = reply.count(THINK), reply.count(END_THINK)
    body = reply.lstrip()
    if thinking:
        if not body.startswith(THINK):
            return "no_think_block"
        if opens != 1 or closes != 1:
            return "bad_think_tags"
        if _EMPTY.match(body):
            return "empty_thinking"
    elif hard_switch:
        if opens or closes:
            return "think_tags_in_no_think"
    else:
        if opens or closes:
            if opens != 1 or closes != 1 or not _EMPTY.match(body):
                return "non_empty_think_in_no_think"
        elif empty_block == "required":
            return "missing_empty_think_block"
    if require_answer and not body.rsplit(END_THINK, 1)[-1].strip():
        return "no_answer"
    return "ok"


class FormatReward:
    def __init__(self, opts: FormatOptions):
        self.name = opts.name or "format"
        self.opts = opts

    def _one(self, item: RewardInput) -> RewardResult:
        thinking = wants_thinking(item)
        hard = item.meta.get("enable_thinking") is False
        if item.finish_reason == "cancelled":
            return result(0.0, "cancelled", thinking=thinking)
        reason = check(item.reply, thinking, hard, self.opts.empty_block, self.opts.require_answer)
        score = 1.0 if reason == "ok" else 0.0
        if item.finish_reason == "length":
            score -= self.opts.overlong_penalty
            reason = reason if reason != "ok" else "overlong"
        return result(score, reason, thinking=thinking)

    def score(self, items: list[RewardInput]) -> list[RewardResult]:
        return [self._one(x) for x in items]


@register("format")
def build(spec: dict) -> FormatReward:
    return FormatReward(options(FormatOptions, spec))
