"""Rollouts: n sampled completions per prompt with a KV cache, token logprobs and budget forcing.

`RolloutEngine(model)` drives a megatron-core GPTModel through its static-batching inference
context (`StaticInferenceContext`, `runtime_gather_output=True`): the prompt is encoded once,
each further step feeds one token per row and gets logits for the last position only. An HF
causal LM (the export) runs the same loop through its own `use_cache=True` path.

Per produced token a `Rollout` records the log-probability the *trainer* would compute: the
log-softmax of the raw logits at temperature 1 over the model's full (padded) vocabulary, whatever
temperature/top-k/top-p the sampler used. Sampling draws only among real token ids (< 151,669),
over the top-k/top-p candidates, by inverse CDF (cumsum + searchsorted on one uniform draw) from a
generator seeded by (seed, prompt index, sample index), so a sample does not depend on how the
rows were batched. Tokens forced by the thinking budget (THINKING_BUDGET_TEXT) are fed, not
sampled (`sampled` False), and still carry their model logprob. The stop token (<|im_end|> or
<|endoftext|>) ends a rollout and is kept as its last token: a policy must learn to emit it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby

import torch

from q3.tokenizer import END_THINK_ID, EOD_ID, IM_START_ID, STOP_IDS, THINK_ID, VOCAB_SIZE
from train.sampling import SamplingParams, ThinkingBudget, sample_batch

OnToken = Callable[[int, int], None]
Cancel = threading.Event | Callable[[int], bool]     # all prompts, or per prompt index


@dataclass
class Rollout:
    prompt_ids: list[int]
    token_ids: list[int]              # produced tokens, the stop token (if any) included
    logprobs: list[float]             # per token: log-softmax at T=1 over the full vocabulary
    sampled: list[bool]               # False for forced tokens (thinking-budget sentence)
    finish_reason: str                # "stop" | "length" | "cancelled"
    budget_forced: bool = False
    top_logprobs: list[list[tuple[int, float]]] | None = None
    routed_experts: list[list[list[int]]] | None = None   # MoE, when recorded: [token][layer] -> expert ids


def row_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """A 63-bit generator seed for one (seed, prompt, sample): independent of batching."""
    h = hashlib.sha256(f"{seed}:{prompt_index}:{sample_index}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def starts_in_think(prompt: list[int]) -> bool:
    """True when the prompt's last turn opened <think> without closing it."""
    for t in reversed(prompt):
        if t in (THINK_ID, END_THINK_ID, IM_START_ID):
            return t == THINK_ID
    return False


# ------------------------------------------------------------------------------------ KV caches

class MegatronKV:
    """megatron-core's static KV cache: `prefill` a [b, s] batch, then `step` one token per row.

    Rows can be dropped or repeated (`select`) by indexing the cache buffers, which megatron
    keeps as [max_seq, batch, heads, dim] per layer in `key_value_memory_dict`; the buffers grow
    by doubling, so `max_len` need not be known up front.

    Prompts of different lengths share a batch by left padding (`pad`: pad tokens per row),
    masked out as keys in every step. megatron applies RoPE by cache index, so a padded row's
    positions are shifted by its pad; attention scores depend only on relative positions, so the
    logits are those of the unpadded prompt up to float rounding (~1e-6, tested).
    """

    def __init__(self, model, batch: int, max_len: int):
        from megatron.core.inference.contexts import StaticInferenceContext

        self.model = model
        self.ctx = StaticInferenceContext(batch, max(int(max_len), 1))
        self.pad_keys: torch.Tensor | None = None   # bool [b, prompt_len], True = pad

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, s = ids.shape
        off = self.ctx.sequence_len_offset
        self._reserve(off + s)
        pos = torch.arange(off, off + s, device=ids.device).unsqueeze(0).expand(b, s)
        out = self.model(ids, pos, mask, inference_context=self.ctx, runtime_gather_output=True)
        self.ctx.increment_sequence_len_offset(s)
        return out[:, -1].float()                 # [b, vocab]: only the last position is computed

    def prefill(self, ids: torch.Tensor, pad: list[int] | None = None) -> torch.Tensor:
        """Logits [b, vocab] after `ids` [b, s]; row i starts with `pad[i]` pad tokens."""
        from train.shims import causal_attention_mask

        assert self.ctx.sequence_len_offset == 0, "prefill once per cache"
        b, s = ids.shape
        mask = causal_attention_mask(s).to(ids.device)
        if pad is not None and any(pad):
            self.pad_keys = torch.arange(s, device=ids.device).unsqueeze(0) < torch.tensor(pad, device=ids.device)[:, None]
            mask = mask | self.pad_keys[:, None, None, :]
        out = self._forward(ids, mask)
        self.ctx.enable_decode_mode()
        return out

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        mask = None                                  # one query attends to the whole cache...
        if self.pad_keys is not None:                # ...but the pad keys
            b, s = self.pad_keys.shape
            tail = self.pad_keys.new_zeros(b, self.ctx.sequence_len_offset + 1 - s)
            mask = torch.cat([self.pad_keys, tail], dim=1)[:, None, None, :]
        return self._forward(ids.view(-1, 1), mask)

    def select(self, rows: torch.Tensor) -> None:
        kv = self.ctx.key_value_memory_dict
        for layer, (k, v) in kv.items():
            kv[layer] = (k[:, rows], v[:, rows])
        self.ctx.max_batch_size = int(rows.numel())
        if self.pad_keys is not None:
            self.pad_keys = self.pad_keys[rows]

    def _reserve(self, length: int) -> None:
        cap = self.ctx.max_sequence_length
        if length <= cap:
            return
        new_cap = max(length, 2 * cap)
        kv = self.ctx.key_value_memory_dict
        for layer, (k, v) in kv.items():
            k2, v2 = k.new_zeros((new_cap, *k.shape[1:])), v.new_zeros((new_cap, *v.shape[1:]))
            k2[:cap], v2[:cap] = k, v
            kv[layer] = (k2, v2)
        self.ctx.max_sequence_length = new_cap


class HFKV:
    """The same interface over a transformers causal LM and its DynamicCache."""

    def __init__(self, model, batch: int, max_len: int):
        self.model, self.past = model, None

    def prefill(self, ids: torch.Tensor, pad: list[int] | None = None) -> torch.Tensor:
        assert not pad or not any(pad), "HF rows of one batch share a prompt length"
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.past = out.cache
        return out.logits[:, -1].float()

    def step(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids.view(-1, 1), cache=self.past, use_cache=True, logits_to_keep=1)
        self.past = out.cache
        return out.logits[:, -1].float()

    def select(self, rows: torch.Tensor) -> None:
        self.past.batch_select_indices(rows)


def is_hf_model(model) -> bool:
    return hasattr(model, "config") and hasattr(model.config, "model_type")


@contextmanager
def eval_mode(model):
    """Inference mode for the call, restoring train mode after (the trainer's model is shared)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


# ------------------------------------------------------------------------------------ the engine

def _logsumexp(x: torch.Tensor) -> torch.Tensor:
    """logsumexp over the last dim; ~1.7x faster than torch.logsumexp on CPU at 151,936 columns."""
    m = x.amax(dim=-1, keepdim=True)
    return (x - m).exp_().sum(-1).log_() + m.squeeze(-1)


class _Row:
    """One sample being generated."""

    def __init__(self, pi: int, si: int, prompt: list[int], params: SamplingParams, seed: int,
                 seed_index: int | None, budget_ids: list[int], want_top: bool):
        self.pi, self.si, self.prompt = pi, si, prompt    # seed_index: the prompt index in row_seed
        self.gen = torch.Generator().manual_seed(row_seed(seed, pi if seed_index is None else seed_index, si))
        self.budget = ThinkingBudget(params.thinking_budget, starts_in_think(prompt))
        self.budget_ids = budget_ids
        self.forced: list[int] = []
        self.out = Rollout(prompt, [], [], [], "length", top_logprobs=[] if want_top else None)
        self.max_tokens = params.max_tokens
        self._maybe_force()

    def _maybe_force(self) -> None:
        if not self.forced and self.budget.exhausted():
            self.forced = list(self.budget_ids)
            self.out.budget_forced = True

    def push(self, token: int, logprob: float, sampled: bool, max_tokens: int) -> bool:
        """Record a token; True when the rollout is finished."""
        o = self.out
        o.token_ids.append(token)
        o.logprobs.append(logprob)
        o.sampled.append(sampled)
        if sampled and token in STOP_IDS:
            o.finish_reason = "stop"
            return True
        self.budget.observe(token)
        self._maybe_force()
        return len(o.token_ids) >= max_tokens


class RolloutEngine:
    """Batched KV-cache sampling from a megatron GPTModel (or an HF causal LM).

    `max_batch`: most rows (prompts x n samples) decoded together (the n samples of a prompt
    always share a batch). `pad_multiple`: a megatron
    prompt is left-padded to the next multiple of it, and prompts of one padded length share a
    batch; the pad depends only on the prompt's own length, so results do not depend on which
    prompts were batched together (1 = no padding: equal lengths only; HF models never pad).
    `vocab_size`: real token ids, the only ones sampled.
    """

    def __init__(self, model, max_batch: int = 64, pad_multiple: int = 32, vocab_size: int = VOCAB_SIZE,
                 budget_ids: list[int] | None = None):
        self.model = model
        self.max_batch = max(1, int(max_batch))
        self.decode_batches = 0            # KV-cached batches run so far (a metric for servers)
        self.record_routing = False        # MoE: keep each fed token's routed experts (RL routing checks)
        self.hf = is_hf_model(model)
        self.pad_multiple = 1 if self.hf else max(1, int(pad_multiple))
        self.vocab_size = vocab_size
        self._budget_ids = budget_ids

    def padded_len(self, n: int) -> int:
        return -(-n // self.pad_multiple) * self.pad_multiple

    @property
    def budget_ids(self) -> list[int]:
        if self._budget_ids is None:
            from q3.tokenizer import load_tokenizer
            from train.sampling import THINKING_BUDGET_TEXT

            self._budget_ids = load_tokenizer().encode(THINKING_BUDGET_TEXT, add_special_tokens=False).ids
        return self._budget_ids

    def generate(self, prompts: list[list[int]], params: SamplingParams, n: int = 1, seed: int = 0,
                 top_logprobs: int = 0, on_token: OnToken | None = None, cancel: Cancel | None = None,
                 seeds: list[int] | None = None, max_tokens: list[int] | None = None,
                 on_progress: Callable[[int, Rollout], None] | None = None) -> list[list[Rollout]]:
        """n rollouts per prompt: result[prompt index][sample index]. `on_token(choice, token)` is
        called for every token produced, choice = prompt index * n + sample index; then
        `on_progress(choice, rollout)` with the rollout so far (its last entries are that token's
        logprob, top_logprobs, finish_reason).

        `cancel`: an Event (set: every unfinished rollout ends "cancelled") or a function of the
        prompt index, polled every step: a prompt whose function turns True has its rows dropped
        from the batch (finish_reason "cancelled") while the others go on unchanged.
        `seeds`: one seed per prompt instead of `seed`: prompt i samples as it would alone in
        `generate([prompts[i]], seed=seeds[i])` (independent requests sharing a batch);
        `max_tokens`: one limit per prompt instead of `params.max_tokens`."""
        if any(len(p) == 0 for p in prompts):
            raise ValueError("empty prompt")
        for name, v in (("seeds", seeds), ("max_tokens", max_tokens)):
            if v is not None and len(v) != len(prompts):
                raise ValueError(f"{len(v)} {name} for {len(prompts)} prompts")
        limit = [params.max_tokens] * len(prompts) if max_tokens is None else list(max_tokens)
        gone = _cancel_fn(cancel)
        results: list[list[Rollout | None]] = [[None] * n for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: self.padded_len(len(prompts[i])))
        per_batch = max(1, self.max_batch // max(n, 1))
        budget_ids = self.budget_ids if params.thinking_budget is not None else []
        with eval_mode(self.model):
            for _, same_len in groupby(order, key=lambda i: self.padded_len(len(prompts[i]))):
                group = list(same_len)
                for k in range(0, len(group), per_batch):
                    pis = group[k:k + per_batch]
                    rows = [_Row(pi, si, prompts[pi], params, seed if seeds is None else seeds[pi],
                                 None if seeds is None else 0, budget_ids, top_logprobs > 0)
                            for pi in pis for si in range(n)]
                    dead = {pi for pi in pis if gone is not None and gone(pi)}
                    for r in rows:
                        r.max_tokens = limit[r.pi]
                        if r.pi in dead:
                            r.out.finish_reason = "cancelled"
                    live = [pi for pi in pis if pi not in dead and limit[pi] > 0]
                    if live:
                        self._run(live, [r for r in rows if r.pi in live], params, n, top_logprobs,
                                  on_token, gone, on_progress)
                    for r in rows:
                        results[r.pi][r.si] = r.out
        return results  # type: ignore[return-value]

    def _run(self, pis: list[int], rows: list[_Row], params: SamplingParams, n: int, top_k: int,
             on_token: OnToken | None, gone: Callable[[int], bool] | None,
             on_progress: Callable[[int, Rollout], None] | None) -> None:
        self.decode_batches += 1
        plen = self.padded_len(len(rows[0].prompt))
        kv = (HFKV if self.hf else MegatronKV)(self.model, len(pis), plen + min(max(r.max_tokens for r in rows), 256) + 1)
        dev = next(self.model.parameters()).device
        firsts = [rows[i * n].prompt for i in range(len(pis))]
        pad = [plen - len(p) for p in firsts]
        ids = torch.tensor([[EOD_ID] * d + p for d, p in zip(pad, firsts, strict=True)], device=dev)
        logits = kv.prefill(ids, pad)
        rep = torch.arange(len(pis), device=dev).repeat_interleave(n)
        if n > 1:                                  # prompt encoded once, its cache copied n times
            kv.select(rep)
        logits = logits[rep]
        active = list(rows)
        seen = torch.zeros(len(active), self.vocab_size, dtype=torch.bool, device=dev)
        while active:
            if gone is not None:
                dead = {pi for pi in {r.pi for r in active} if gone(pi)}
                if dead:                             # drop the rows of cancelled prompts
                    keep = [i for i, r in enumerate(active) if r.pi not in dead]
                    for r in active:
                        if r.pi in dead:
                            r.out.finish_reason = "cancelled"
                    if not keep:
                        return
                    idx = torch.tensor(keep, device=dev)
                    kv.select(idx)
                    seen, logits, active = seen[idx], logits[idx], [active[i] for i in keep]
            lse = _logsumexp(logits)                             # T=1, full vocab: the trainer's view
            real = logits[:, : self.vocab_size]
            free = [i for i, r in enumerate(active) if not r.forced]
            free_set = set(free)
            chosen = torch.empty(len(active), dtype=torch.long, device=dev)
            if free:
                u = torch.stack([torch.rand((), generator=active[i].gen) for i in free]).to(dev)
                if len(free) == len(active):
                    chosen = sample_batch(real, seen, params, u)
                else:
                    chosen[free] = sample_batch(real[free], seen[free], params, u)
            for i, r in enumerate(active):
                if r.forced:
                    chosen[i] = r.forced.pop(0)
            chosen_lp = (logits.gather(1, chosen.view(-1, 1)).squeeze(1) - lse).tolist()
            if top_k:
                top_v, top_i = real.topk(top_k, dim=-1)
                top_v = top_v - lse.unsqueeze(1)
            seen[torch.arange(len(active), device=dev), chosen.clamp(max=self.vocab_size - 1)] = True
            toks = chosen.tolist()
            keep = []
            for i, r in enumerate(active):
                if top_k:
                    r.out.top_logprobs.append(list(zip(top_i[i].tolist(), top_v[i].tolist(), strict=True)))
                done = r.push(toks[i], chosen_lp[i], i in free_set, r.max_tokens)
                if on_token is not None:
                    on_token(r.pi * n + r.si, toks[i])
                if on_progress is not None:
                    on_progress(r.pi * n + r.si, r.out)
                if not done:
                    keep.append(i)
            if not keep:
                return
            if len(keep) < len(active):
                idx = torch.tensor(keep, device=dev)
                kv.select(idx)
                seen, active, chosen = seen[idx], [active[i] for i in keep], chosen[idx]
            if self.record_routing and not self.hf:
                with RoutingTap(self.model) as tap:
                    logits = kv.step(chosen)
                fed = tap.experts(1, len(active))       # the token each row just fed (s = 1)
                for i, r in enumerate(active):
                    if r.out.routed_experts is None:
                        r.out.routed_experts = []
                    r.out.routed_experts.append(fed[i][0])
            else:
                logits = kv.step(chosen)


class RoutingTap:
    """Records the experts every MoE router of a megatron model picks during a forward pass
    (megatron's TopKRouter returns (probs, routing_map [s*b, experts]), tokens sequence-first)."""

    def __init__(self, model):
        from train.model import moe_routers

        self.routers = moe_routers(model)
        self.maps: list[torch.Tensor] = []
        self._hooks: list = []

    def __enter__(self) -> RoutingTap:
        self._hooks = [r.register_forward_hook(lambda _m, _i, out: self.maps.append(out[1].detach()))
                       for r in self.routers]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._hooks:
            h.remove()

    def experts(self, s: int, b: int) -> list[list[list[list[int]]]]:
        """[b][s][layer] -> sorted expert ids of token (s, b) in the last forward."""
        maps = self.maps[-len(self.routers):]
        out = [[[[] for _ in maps] for _ in range(s)] for _ in range(b)]
        for li, m in enumerate(maps):
            m = m.view(s, b, -1)
            for i in range(b):
                for t in range(s):
                    out[i][t][li] = torch.nonzero(m[t, i]).flatten().tolist()
        return out


def _cancel_fn(cancel: Cancel | None) -> Callable[[int], bool] | None:
    if cancel is None or callable(cancel) and not isinstance(cancel, threading.Event):
        return cancel
    return lambda _pi: cancel.is_set()


# ------------------------------------------------------------------------------- remote engine

class RemoteEngine:
    """`generate` over an OpenAI-compatible server (vLLM, SGLang) through q3/llm.py.

    Token prompts go to `/v1/completions` (token-in, token-out: `return_tokens_as_token_ids`), one
    request per (prompt, sample) with the seed `row_seed(seed, prompt, sample)`, asking for
    `logprobs`. The server samples at the request's temperature but reports logprobs of its own
    processed distribution (vLLM's default) - compare with the trainer through `LogprobGap`. The
    thinking budget is not forced remotely (a server cannot be told to); max_tokens still bounds.
    """

    def __init__(self, endpoint):
        from q3.llm import LLMClient

        self.client = LLMClient(endpoint)

    def generate(self, prompts: list[list[int]], params: SamplingParams, n: int = 1, seed: int = 0,
                 top_logprobs: int = 0, on_token: OnToken | None = None, cancel: Cancel | None = None,
                 seeds: list[int] | None = None,
                 on_progress: Callable[[int, Rollout], None] | None = None) -> list[list[Rollout]]:
        from q3.llm import ChatRequest

        body = {"temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
                "presence_penalty": params.presence_penalty, "max_tokens": params.max_tokens,
                "logprobs": max(1, top_logprobs), "return_tokens_as_token_ids": True,
                "skip_special_tokens": False}
        rs = [row_seed(seed, pi, si) if seeds is None else row_seed(seeds[pi], 0, si)
              for pi in range(len(prompts)) for si in range(n)]
        reqs = [ChatRequest(messages=[], prompt=list(p), params={**body, "seed": rs[pi * n + si]},
                            meta={"pi": pi, "si": si})
                for pi, p in enumerate(prompts) for si in range(n)]
        gone = _cancel_fn(cancel)
        if gone is not None and all(gone(pi) for pi in range(len(prompts))):
            return [[Rollout(list(p), [], [], [], "cancelled") for _ in range(n)] for p in prompts]
        out: list[list[Rollout]] = [[] for _ in prompts]
        for res in self.client.complete_many(reqs):
            pi, si = res.meta["pi"], res.meta["si"]
            if res.error:
                raise RuntimeError(f"remote rollout failed for prompt {pi}: {res.error}")
            ro = _remote_rollout(prompts[pi], res.choice, top_logprobs)
            if on_token is not None:
                for t in ro.token_ids:
                    on_token(pi * n + si, t)
            if on_progress is not None:
                on_progress(pi * n + si, ro)
            out[pi].append(ro)
        return out


def _token_id(tok: str) -> int:
    if not tok.startswith("token_id:"):
        raise RuntimeError(f"server returned token {tok!r}, not 'token_id:N' (needs return_tokens_as_token_ids)")
    return int(tok.split(":", 1)[1])


def _remote_rollout(prompt: list[int], choice: dict, top_logprobs: int) -> Rollout:
    lp = choice.get("logprobs") or {}
    ids = [_token_id(t) for t in lp.get("tokens", [])]
    vals = [float(x) for x in lp.get("token_logprobs", [])]
    top = None
    if top_logprobs:
        top = [sorted(((_token_id(t), float(v)) for t, v in (d or {}).items()), key=lambda x: -x[1])[:top_logprobs]
               for d in lp.get("top_logprobs", [])]
    reason = choice.get("finish_reason") or "length"
    return Rollout(list(prompt), ids, vals, [True] * len(ids), "stop" if reason == "stop" else "length",
                   top_logprobs=top)


__all__ = ["HFKV", "MegatronKV", "RemoteEngine", "Rollout", "RolloutEngine", "row_seed", "starts_in_think"]
