"""Chat SFT data: Qwen3-template rendering, loss masks, packing, chat JSONL.

A trained assistant turn is rendered as the *last* turn of its prefix, so its tokens are exactly
what the model produces at inference after `render_chat(prefix, add_generation_prompt=True)`:

    ids  = encode(prompt) + encode(response)          prompt   = ...<|im_start|>assistant\\n
    mask =   0 ...                1 ...                response = <think>\\n...\\n</think>\\n\\nanswer<|im_end|>

The prompt and the response are tokenised separately, as at inference (the server tokenises the
prompt, the model emits the response tokens); where BPE would merge across the seam (an answer
starting with whitespace and no think block) the sample keeps the inference tokenisation.
The template strips reasoning from assistant turns before the last user query, so the same
assistant turn renders differently as history and as the last turn. `train_turns="all"` (the
default) trains every assistant turn, each in the rendering it has as the last turn of its prefix;
turns whose rendering is unchanged in a longer prefix share that sample (one forward for several
turns), the others get a sample of their own. `train_turns="last"` trains the final turn only.

Thinking-budget turns (`budget_forced: true` on an assistant message, written by
`train.post.fusion`): `<think>\\n` + reasoning cut at the budget + THINKING_BUDGET_TEXT + answer.
The stop sentence is inserted by the sampler at inference, so its tokens have mask 0.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from q3.config import ConfigError
from q3.log import get_logger
from q3.tokenizer import END_THINK, EOD_ID, IM_END, encode, render_chat
from train.sampling import THINKING_BUDGET_TEXT

log = get_logger("train.post.chat")

ROLES = ("system", "user", "assistant", "tool")


class ChatDataError(ConfigError):
    """A conversation cannot be rendered or trained (bad shape, or template mismatch)."""


@dataclass
class ChatSample:
    ids: list[int]
    loss_mask: list[int]              # 1 on trained assistant tokens (incl. their <|im_end|>)
    turns: list[int] = field(default_factory=list)   # message indices of the trained turns
    source: str | None = None


# ---------------------------------------------------------------- validation

def check_messages(messages: Any, tools: Any = None) -> None:
    """Raise ChatDataError (one line) unless `messages` is a renderable OpenAI conversation."""
    if not isinstance(messages, list) or not messages:
        raise ChatDataError("'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ChatDataError(f"message {i} is not an object")
        role = m.get("role")
        if role not in ROLES:
            raise ChatDataError(f"message {i}: role {role!r} is not one of {', '.join(ROLES)}")
        content = m.get("content")
        calls = m.get("tool_calls")
        if role == "assistant":
            if content is None and not calls:
                raise ChatDataError(f"message {i}: assistant turn has neither content nor tool_calls")
            if calls is not None:
                _check_tool_calls(i, calls)
            rc = m.get("reasoning_content")
            if rc is not None and not isinstance(rc, str):
                raise ChatDataError(f"message {i}: reasoning_content must be a string")
            if m.get("budget_forced") and (rc is None or calls):
                raise ChatDataError(f"message {i}: a budget_forced turn needs reasoning_content and no tool_calls")
        if content is not None and not isinstance(content, str):
            raise ChatDataError(f"message {i}: content must be a string (got {type(content).__name__})")
        if role != "assistant" and content is None:
            raise ChatDataError(f"message {i}: {role} turn has no content")
    if not any(m["role"] == "assistant" for m in messages):
        raise ChatDataError("no assistant turn to train")
    if tools is not None and (not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools)):
        raise ChatDataError("'tools' must be a list of objects")


def _check_tool_calls(i: int, calls: Any) -> None:
    if not isinstance(calls, list) or not calls:
        raise ChatDataError(f"message {i}: tool_calls must be a non-empty list")
    for c in calls:
        fn = c.get("function", c) if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                or not isinstance(fn.get("arguments"), (str, dict)):
            raise ChatDataError(f"message {i}: each tool call needs a name and arguments (object or JSON string)")


# ---------------------------------------------------------------- rendering and masks

def _budget_head() -> str:
    return THINKING_BUDGET_TEXT.split(END_THINK)[0]


def _for_template(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the template reads them: assistant content never None; a budget-forced turn as
    history carries the reasoning the model saw (cut reasoning + the stop sentence)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            m = {**m, "content": m.get("content") or ""}
            if m.get("budget_forced"):
                m["reasoning_content"] = (m["reasoning_content"] + _budget_head()).strip("\n")
        out.append(m)
    return out


@dataclass
class _Turn:
    index: int
    prompt: str                       # render(prefix, add_generation_prompt=True)
    segments: list[tuple[str, int]]   # response pieces and their mask

    @property
    def text(self) -> str:
        return self.prompt + "".join(s for s, _ in self.segments)


def _render(messages: list[dict[str, Any]], **kw: Any) -> str:
    from jinja2 import TemplateError

    try:
        return render_chat(messages, **kw)
    except TemplateError as e:                  # e.g. a tool schema the template cannot serialise
        raise ChatDataError(f"the chat template failed: {e}") from None


def _turn(messages: list[dict[str, Any]], tmpl: list[dict[str, Any]], j: int, tools, enable_thinking: bool) -> _Turn:
    prompt = _render(tmpl[:j], enable_thinking=enable_thinking, add_generation_prompt=True, tools=tools)
    m = messages[j]
    if m.get("budget_forced"):
        if not prompt.endswith("<|im_start|>assistant\n"):
            raise ChatDataError(f"message {j}: a budget_forced turn needs enable_thinking=True")
        return _Turn(j, prompt, [("<think>\n" + m["reasoning_content"], 1), (THINKING_BUDGET_TEXT, 0),
                                 ((m.get("content") or "") + IM_END, 1)])
    full = _render(tmpl[:j + 1], enable_thinking=enable_thinking, tools=tools)
    if not full.startswith(prompt) or not full.endswith(IM_END + "\n"):
        raise ChatDataError(f"message {j}: the rendered assistant turn does not continue the generation prompt "
                            f"(reasoning with enable_thinking=False?)")
    return _Turn(j, prompt, [(full[len(prompt):-1], 1)])     # the trailing "\n" is not generated


def _tokenize_pieces(pieces: list[tuple[str, int]]) -> tuple[list[int], list[int], list[int]]:
    ids: list[int] = []
    mask: list[int] = []
    starts = []
    for text, m in pieces:
        starts.append(len(ids))
        t = encode(text) if text else []
        ids += t
        mask += [m] * len(t)
    return ids, mask, starts


def _single(turn: _Turn, source: str | None) -> ChatSample:
    ids, mask, _ = _tokenize_pieces([(turn.prompt, 0), *turn.segments])
    return ChatSample(ids, mask, [turn.index], source)


def _grouped(base: _Turn, others: list[_Turn], source: str | None) -> list[ChatSample]:
    """One sample over base.text training base and the earlier `others` (whose text base.text
    starts with); falls back to one sample per turn if the tokens at a turn differ from its own
    inference tokenisation."""
    turns = sorted([base, *others], key=lambda t: t.index)
    pieces: list[tuple[str, int]] = []
    pos = 0
    for t in turns:
        pieces.append((base.text[pos:len(t.prompt)], 0))
        pieces += t.segments
        pos = len(t.text)
    ids, mask, starts = _tokenize_pieces(pieces)
    k = 0
    for t in turns:                                  # verify: prefix == encode(prompt), response tokens match
        k += 1
        start = starts[k]
        resp = [i for s, _ in t.segments for i in encode(s)]
        if ids[:start] != encode(t.prompt) or ids[start:start + len(resp)] != resp:
            return [_single(t, source) for t in turns]
        k += len(t.segments)
    return [ChatSample(ids, mask, [t.index for t in turns], source)]


def tokenize_conversation(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None,
                          train_turns: Literal["all", "last"] = "all", enable_thinking: bool = True,
                          source: str | None = None) -> list[ChatSample]:
    """Token ids + loss masks for the assistant turns of one conversation (see module doc).

    Assistant messages with `"train": false` are context only. `enable_thinking=False` is the
    template's hard switch (the prompt carries the empty think block; turns with reasoning are
    then an error); the soft switch is a `/no_think` flag in the data, with the default True.
    """
    check_messages(messages, tools)
    tmpl = _for_template(messages)
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("train", True) is not False]
    if train_turns == "last":
        trained = trained[-1:]
    elif train_turns != "all":
        raise ChatDataError(f"train_turns must be 'all' or 'last', got {train_turns!r}")
    if not trained:
        raise ChatDataError("no assistant turn to train")
    turns = [_turn(messages, tmpl, j, tools, enable_thinking) for j in trained]
    groups: list[tuple[_Turn, list[_Turn]]] = []
    for t in reversed(turns):                     # longest prefix first; attach turns it contains
        for base, others in groups:
            if len(t.segments) > 1 or not base.text.startswith(t.text):    # budget turns stay alone
                continue
            others.append(t)
            break
        else:
            groups.append((t, []))
    samples = [s for base, others in groups for s in _grouped(base, others, source)]
    return sorted(samples, key=lambda s: s.turns[-1])


def tokenize_rows(rows: list[dict[str, Any]], train_turns: Literal["all", "last"] = "all",
                  enable_thinking: bool = True, on_error: Literal["raise", "skip"] = "raise",
                  stats: dict[str, Any] | None = None) -> list[ChatSample]:
    """`tokenize_conversation` over `read_chat_jsonl` rows; an unrenderable row raises naming its
    source, or with `on_error="skip"` is skipped and counted (stats: rows, samples, skipped, errors)."""
    out, errors = [], []
    for r in rows:
        try:
            out += tokenize_conversation(r["messages"], r.get("tools"), train_turns, enable_thinking, r.get("source"))
        except ChatDataError as e:
            if on_error == "raise":
                raise ChatDataError(f"{r.get('source', '?')}: {e}") from None
            errors.append(f"{r.get('source', '?')}: {e}")
    if errors:
        log.warning("skipped %d of %d conversations (first: %s)", len(errors), len(rows), errors[0])
    if stats is not None:
        stats.update(rows=len(rows), samples=len(out), skipped=len(errors), errors=errors[:20])
    return out


def show_mask(sample: ChatSample, open_: str = "[[", close: str = "]]") -> str:
    """The sample's text with trained spans bracketed (for docs and debugging)."""
    from q3.tokenizer import decode

    out, run, cur = [], [], 0
    for i, m in zip(sample.ids + [0], sample.loss_mask + [-1], strict=True):
        if m != cur and run:
            text = decode(run)
            out.append(f"{open_}{text}{close}" if cur == 1 else text)
            run = []
        cur = m
        run.append(i)
    return "".join(out)


# ---------------------------------------------------------------- packing

@dataclass
class PackedSequence:
    tokens: list[int]
    labels: list[int]          # labels[t] = tokens[t+1] inside a sample
    loss_mask: list[int]       # aligned with labels: 1 where labels[t] is a trained token
    position_ids: list[int]    # 0.. at each sample start
    segment_ids: list[int]     # 1..n per sample, 0 = padding
    sample_index: list[int] = field(default_factory=list)   # input index of segment k at [k-1]


def pack(samples: list[ChatSample], seq_length: int, overlong: Literal["drop", "truncate"] = "drop",
         stats: dict[str, Any] | None = None) -> list[PackedSequence]:
    """Greedy first-fit packing into sequences of exactly `seq_length` (EOD padding, mask 0).

    A sample predicts nothing from its last token and nothing across its boundary. Samples
    longer than `seq_length` are dropped or truncated (`overlong`); samples left without a
    trained label are dropped. `stats` (if given) is filled with counts.
    """
    if overlong not in ("drop", "truncate"):
        raise ConfigError(f"overlong must be 'drop' or 'truncate', got {overlong!r}")
    if seq_length < 2:
        raise ConfigError(f"seq_length must be >= 2, got {seq_length}")
    c: Counter = Counter(samples=0, dropped_overlong=0, truncated=0, dropped_no_loss=0)   # all keys, even at 0
    bins: list[list[tuple[int, ChatSample]]] = []
    room = _FirstFit(seq_length)
    for idx, s in enumerate(samples):
        c["samples"] += 1
        if len(s.ids) > seq_length:
            if overlong == "drop":
                c["dropped_overlong"] += 1
                continue
            s = ChatSample(s.ids[:seq_length], s.loss_mask[:seq_length], s.turns, s.source)
            c["truncated"] += 1
        if not any(s.loss_mask[1:]):              # the first token is never a label
            c["dropped_no_loss"] += 1
            continue
        b = room.place(len(s.ids))
        if b == len(bins):
            bins.append([])
        bins[b].append((idx, s))
    out = [_pack_one(b, seq_length) for b in bins]
    used = sum(len(s.ids) for b in bins for _, s in b)
    c.update(sequences=len(out), packed=sum(len(b) for b in bins), tokens=used,
             trained_tokens=sum(sum(p.loss_mask) for p in out))
    if stats is not None:
        stats.update(c)
        stats["fill"] = round(used / (len(out) * seq_length), 4) if out else 0.0
    return out


class _FirstFit:
    """First-fit bin choice in O(log bins): a max segment tree over the bins' free room."""

    def __init__(self, capacity: int) -> None:
        self.capacity, self.size, self.n = capacity, 1, 0
        self.tree = [0, 0]

    def place(self, length: int) -> int:
        """Index of the first bin with room >= length (a new bin if none), after placing it."""
        if self.tree[1] < length:                      # no open bin fits: open one
            if self.n == self.size:                    # full: double the leaves, rebuild
                leaves = self.tree[self.size:self.size + self.n]
                self.size *= 2
                self.tree = [0] * (2 * self.size)
                self.tree[self.size:self.size + len(leaves)] = leaves
                for node in range(self.size - 1, 0, -1):
                    self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])
            b, self.n = self.n, self.n + 1
            self._set(b, self.capacity - length)
            return b
        node = 1
        while node < self.size:                        # leftmost leaf with enough room
            node = 2 * node if self.tree[2 * node] >= length else 2 * node + 1
        b = node - self.size
        self._set(b, self.tree[node] - length)
        return b

    def _set(self, b: int, value: int) -> None:
        node = b + self.size
        self.tree[node] = value
        while node > 1:
            node //= 2
            self.tree[node] = max(self.tree[2 * node], self.tree[2 * node + 1])


def _pack_one(samples: list[tuple[int, ChatSample]], seq_length: int) -> PackedSequence:
    tokens, labels, mask, pos, seg = [], [], [], [], []
    for k, (_, s) in enumerate(samples, 1):
        n = len(s.ids)
        tokens += s.ids
        labels += s.ids[1:] + [EOD_ID]
        mask += s.loss_mask[1:] + [0]
        pos += list(range(n))
        seg += [k] * n
    pad = seq_length - len(tokens)
    return PackedSequence(tokens + [EOD_ID] * pad, labels + [EOD_ID] * pad, mask + [0] * pad,
                          pos + list(range(pad)), seg + [0] * pad, [i for i, _ in samples])


def packed_attention_mask(segment_ids):
    """bool [1,1,s,s] (or [b,1,s,s] for [b,s] input): block-diagonal causal, True = masked out,
    the `attention_mask` megatron's local attention takes. Padding (segment 0) attends to itself."""
    import torch

    seg = torch.as_tensor(segment_ids)
    if seg.dim() == 1:
        seg = seg.unsqueeze(0)
    s = seg.shape[-1]
    causal = torch.ones(s, s, dtype=torch.bool).tril()
    allowed = (seg.unsqueeze(-1) == seg.unsqueeze(-2)) & causal
    return (~allowed).unsqueeze(1)


def collate(seqs: list[PackedSequence]) -> dict[str, Any]:
    """A trainer microbatch (train.core contract): tokens, labels, loss_mask (float),
    position_ids, attention_mask [b,1,s,s]."""
    import torch

    def t(name: str, dtype=torch.long):
        return torch.tensor([getattr(p, name) for p in seqs], dtype=dtype)

    seg = t("segment_ids")
    return {"tokens": t("tokens"), "labels": t("labels"), "loss_mask": t("loss_mask", torch.float32),
            "position_ids": t("position_ids"), "attention_mask": packed_attention_mask(seg)}


# ---------------------------------------------------------------- chat JSONL

def read_chat_jsonl(path: str | Path, on_error: Literal["raise", "skip"] = "raise",
                    stats: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of a chat JSONL: `{"messages": [...], "tools": [...]?, ...}` (OpenAI format; synth's
    cold-start `sft.jsonl` rows are of this form). Returns `{"messages", "tools", "source"
    ("file:line"), "meta" (the row's other keys, a `meta` object's keys merged in)}`. A bad row raises ChatDataError naming
    file:line, or with `on_error="skip"` is skipped and counted (stats: rows, skipped, errors)."""
    p = Path(path)
    if not p.is_file():
        raise ChatDataError(f"chat data not found: {p}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    rows, errors = [], []
    n = 0
    with p.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            n += 1
            where = f"{p}:{lineno}"
            try:
                row = _parse_row(raw)
            except ChatDataError as e:
                if on_error == "raise":
                    raise ChatDataError(f"{where}: {e}") from None
                errors.append(f"{where}: {e}")
                continue
            meta = {k: v for k, v in row.items() if k not in ("messages", "tools", "meta")}
            if isinstance(row.get("meta"), dict):      # fusion rows keep their own meta object
                meta = {**row["meta"], **meta}
            rows.append({"messages": row["messages"], "tools": row.get("tools"), "source": where, "meta": meta})
    if errors:
        log.warning("%s: skipped %d of %d rows (first: %s)", p, len(errors), n, errors[0])
    if stats is not None:
        stats.update(rows=n, skipped=len(errors), errors=errors[:20])
    return rows


def _parse_row(raw: bytes) -> dict[str, Any]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ChatDataError(f"not UTF-8 (byte {e.start})") from None
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ChatDataError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict) or "messages" not in row:
        raise ChatDataError("row must be an object with 'messages'")
    check_messages(row["messages"], row.get("tools"))
    return row
