"""RolloutEngine: KV cache == full recompute, logprobs == the trainer's, budget forcing, seeds, stop,
cancel/on_token/top_logprobs, the HF path, sampling by inverse CDF and RemoteEngine over HTTP."""

import json
import threading
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from tiny_export import random_model

from q3.tokenizer import IM_END_ID, THINK_ID
from train.logprobs import LogprobGap, token_logprobs
from train.model import forward_logits
from train.rollout import MegatronKV, RemoteEngine, RolloutEngine, row_seed, starts_in_think
from train.sampling import THINKING_BUDGET_TEXT, SamplingParams, candidates, sample_batch

FREE = SamplingParams(temperature=1.0, top_p=0.95, top_k=20, max_tokens=8)
GREEDY = SamplingParams(temperature=0.0, max_tokens=6)


@pytest.fixture(scope="module", params=["tiny_dense", "tiny_moe"])
def model(request):
    return random_model(request.param)[0]


@pytest.fixture(scope="module")
def moe():
    return random_model("tiny_moe", seed=1)[0]


@contextmanager
def edited(model, edit):
    """Apply `edit(model)` to the weights in place for the block, then restore them (megatron
    models hold process groups and cannot be deep-copied)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    with torch.no_grad():
        edit(model)
    try:
        yield model
    finally:
        model.load_state_dict(saved, strict=False)


def trainer_logprobs(model, rollouts):
    """token_logprobs of each rollout's tokens, aligned with Rollout.logprobs (one row per rollout)."""
    seqs = [r.prompt_ids + r.token_ids for r in rollouts]
    s = max(map(len, seqs)) + 1
    tokens = torch.zeros(len(seqs), s, dtype=torch.long)
    mask = torch.zeros(len(seqs), s)
    for i, (r, q) in enumerate(zip(rollouts, seqs, strict=True)):
        tokens[i, : len(q)] = torch.tensor(q)
        mask[i, len(r.prompt_ids) - 1: len(q) - 1] = 1
    with torch.no_grad():
        lp, _ = token_logprobs(model, tokens, mask, chunk_size=7)
    return [lp[i, len(r.prompt_ids) - 1: len(r.prompt_ids) - 1 + len(r.token_ids)] for i, r in enumerate(rollouts)]


def test_kv_cache_logits_equal_full_recompute(model):
    torch.manual_seed(0)
    ids = torch.randint(0, 151_000, (3, 14))
    with torch.no_grad():
        full = forward_logits(model.eval(), ids)
        kv = MegatronKV(model, 3, 6)               # smaller than needed: the cache must grow
        got = [kv.prefill(ids[:, :5])]
        for t in range(5, 14):
            if t == 9:                             # drop row 1 and duplicate row 2, as rollouts do
                kv.select(torch.tensor([0, 2, 2]))
                ids, full = ids[[0, 2, 2]], full[[0, 2, 2]]
                got = [g[[0, 2, 2]] for g in got]
            got.append(kv.step(ids[:, t]))
    for k, g in enumerate(got):
        assert g.shape == (3, full.shape[-1])
        assert (g - full[:, 4 + k]).abs().max() < 1e-5


def test_left_padded_rows_equal_unpadded_recompute(model):
    """Prompts of different lengths share a batch by left padding: same logits as alone."""
    torch.manual_seed(1)
    short, long = torch.randint(0, 151_000, (1, 9)), torch.randint(0, 151_000, (1, 14))
    with torch.no_grad():
        full_s, full_l = forward_logits(model.eval(), short)[0], forward_logits(model, long)[0]
        kv = MegatronKV(model, 2, 16)
        ids = torch.cat([torch.cat([torch.zeros(1, 5, dtype=torch.long), short[:, :4]], 1), long[:, :9]])
        got = [kv.prefill(ids, pad=[5, 0])]
        for t in range(5):
            got.append(kv.step(torch.tensor([short[0, 4 + t], long[0, 9 + t]])))
    for k, g in enumerate(got):
        assert (g[0] - full_s[3 + k]).abs().max() < 1e-5
        assert (g[1] - full_l[8 + k]).abs().max() < 1e-5


def test_rollout_logprobs_match_trainer_and_stale_weights_alarm(model):
    prompts = [[1, 2, 3, 4, 5], [7, 8, 9], [11, 12, 13, 14, 15]]
    rollouts = [r for rs in RolloutEngine(model).generate(prompts, FREE, n=3, seed=3) for r in rs]
    assert len(rollouts) == 9 and all(len(r.token_ids) == FREE.max_tokens for r in rollouts)
    rollout_lp = torch.cat([torch.tensor(r.logprobs) for r in rollouts])
    sampled = torch.cat([torch.tensor(r.sampled) for r in rollouts])
    gap = LogprobGap(threshold=1e-4)
    assert not gap.check(rollout_lp, torch.cat(trainer_logprobs(model, rollouts)), sampled)
    assert gap.last["mean"] <= 1e-5 and gap.last["n"] == 72
    assert rollout_lp.max() < 0 and rollout_lp.min() > -30            # real log-probabilities
    def step(m):                                                     # the trainer moved on
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.01)

    with edited(model, step) as stale:
        assert gap.check(rollout_lp, torch.cat(trainer_logprobs(stale, rollouts)), sampled)
    assert gap.last["alarm"] and gap.last["max"] > 1e-4 and len(gap.history) == 2


def test_thinking_budget_forces_the_sentence(model):
    from q3.tokenizer import load_tokenizer

    budget_ids = load_tokenizer().encode(THINKING_BUDGET_TEXT, add_special_tokens=False).ids
    prompt = [151644, 77091, 198, THINK_ID]                           # <|im_start|>assistant\n<think>
    assert starts_in_think(prompt) and not starts_in_think(prompt + [151668])
    p = FREE.with_(thinking_budget=3, max_tokens=3 + len(budget_ids) + 4)
    engine = RolloutEngine(model)
    for r in engine.generate([prompt], p, n=2, seed=0)[0]:
        assert r.budget_forced and r.finish_reason == "length"
        assert r.token_ids[3:3 + len(budget_ids)] == budget_ids        # after exactly 3 thinking tokens
        assert r.sampled == [True] * 3 + [False] * len(budget_ids) + [True] * 4
        lp = trainer_logprobs(model, [r])[0]                           # forced tokens carry logprobs too
        assert (lp - torch.tensor(r.logprobs)).abs().max() < 1e-4
    r0 = engine.generate([prompt], p.with_(thinking_budget=0), seed=0)[0][0]   # no thinking at all
    assert r0.token_ids[: len(budget_ids)] == budget_ids and not any(r0.sampled[: len(budget_ids)])
    r_none = engine.generate([prompt], replace(p, thinking_budget=None), seed=0)[0][0]
    assert not r_none.budget_forced and all(r_none.sampled)


def test_seeds_independent_of_batching(model):
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9, 10]]
    p = FREE.with_(max_tokens=5, presence_penalty=1.5)
    ids = lambda res: [[r.token_ids for r in rs] for rs in res]            # noqa: E731
    a = ids(RolloutEngine(model).generate(prompts, p, n=3, seed=7))
    assert ids(RolloutEngine(model, max_batch=1).generate(prompts, p, n=3, seed=7)) == a
    assert ids(RolloutEngine(model, max_batch=4).generate(prompts, p, n=3, seed=7)) == a
    assert ids(RolloutEngine(model, pad_multiple=1).generate(prompts, p, n=3, seed=7)) == a   # no padding
    assert ids(RolloutEngine(model).generate(prompts[1:2], p, n=3, seed=7)) != a[1:2]    # the prompt index counts
    assert [rs[:2] for rs in ids(RolloutEngine(model).generate(prompts, p, n=2, seed=7))] == [rs[:2] for rs in a]
    assert ids(RolloutEngine(model).generate(prompts, p, n=3, seed=8)) != a
    assert a[0][0] != a[0][1] and a[0][0] != a[1][0]
    assert row_seed(7, 0, 1) != row_seed(7, 1, 0)


def test_per_prompt_seeds_sample_as_alone(model):
    """`seeds`: independent requests sharing one batch sample exactly as each would alone."""
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8], [7, 8, 9, 10]]
    seeds = [11, 5, 11]
    p = FREE.with_(max_tokens=5, presence_penalty=1.5)
    ids = lambda res: [[r.token_ids for r in rs] for rs in res]            # noqa: E731
    batched = ids(RolloutEngine(model).generate(prompts, p, n=2, seeds=seeds))
    alone = [ids(RolloutEngine(model).generate([q], p, n=2, seed=s))[0] for q, s in zip(prompts, seeds, strict=True)]
    assert batched == alone
    assert ids(RolloutEngine(model).generate(prompts, p, n=2, seed=11)) != batched    # default: unchanged rule
    short = ids(RolloutEngine(model).generate(prompts, p.with_(max_tokens=9), n=2, seeds=seeds, max_tokens=[5, 2, 0]))
    assert short == [batched[0], [t[:2] for t in batched[1]], [[], []]]              # per-prompt limits


def test_per_prompt_cancel_drops_only_that_prompt(model):
    """`cancel` as a function of the prompt index: the cancelled prompt's rows leave the batch, the
    others produce what they produce uncancelled; `on_progress` sees each token's logprob."""
    prompts = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    p = FREE.with_(max_tokens=8)
    engine = RolloutEngine(model)
    full = engine.generate(prompts, p, n=2, seeds=[1, 2, 3], top_logprobs=2)
    counts: dict[int, int] = {}
    progress: list[tuple[int, float, list]] = []

    def on_token(choice: int, token: int) -> None:
        counts[choice // 2] = counts.get(choice // 2, 0) + 1

    def on_progress(choice: int, r) -> None:
        progress.append((choice, r.logprobs[-1], r.top_logprobs[-1]))

    runs = engine.decode_batches
    got = engine.generate(prompts, p, n=2, seeds=[1, 2, 3], top_logprobs=2, on_token=on_token,
                          on_progress=on_progress, cancel=lambda pi: pi == 1 and counts.get(1, 0) >= 6)
    assert engine.decode_batches == runs + 1                         # one KV batch for all three
    for pi in (0, 2):
        assert [r.token_ids for r in got[pi]] == [r.token_ids for r in full[pi]]
        assert all(r.finish_reason == full[pi][0].finish_reason for r in got[pi])
    assert [r.finish_reason for r in got[1]] == ["cancelled"] * 2
    assert [len(r.token_ids) for r in got[1]] == [3, 3]              # 3 steps of its 2 rows
    assert [r.token_ids for r in got[1]] == [r.token_ids[:3] for r in full[1]]
    mine = [(lp, top) for c, lp, top in progress if c == 4]           # prompt 2, sample 0
    want = list(zip(full[2][0].logprobs, full[2][0].top_logprobs, strict=True))
    assert len(mine) == len(want)                                    # batch size changed: rounding only
    for (lp, top), (lp2, top2) in zip(mine, want, strict=True):
        assert abs(lp - lp2) < 1e-4 and [t for t, _ in top] == [t for t, _ in top2]
    none = engine.generate(prompts, p, cancel=lambda pi: True)       # all cancelled before a step
    assert all(r.finish_reason == "cancelled" and not r.token_ids for rs in none for r in rs)


def test_stop_on_im_end_and_greedy(moe):
    prompt = [5, 6, 7, 8]
    first = RolloutEngine(moe).generate([prompt], GREEDY.with_(max_tokens=4), seed=0)[0][0]
    a, b, c, d = first.token_ids
    assert IM_END_ID not in first.token_ids and d not in (a, b, c)
    def swap(m):                                   # swap output rows: where d was argmax, <|im_end|> is
        w = m.output_layer.weight
        w[[d, IM_END_ID]] = w[[IM_END_ID, d]]

    with edited(moe, swap) as stopper:
        r = RolloutEngine(stopper).generate([prompt], GREEDY, n=2, seed=0)[0]
    for x in r:
        assert x.token_ids == [a, b, c, IM_END_ID] and x.finish_reason == "stop" and all(x.sampled)
    assert abs(r[0].logprobs[0] - first.logprobs[0]) < 1e-5


def test_on_token_cancel_and_top_logprobs(model):
    seen: list[tuple[int, int]] = []
    cancel = threading.Event()

    def on_token(choice: int, token: int) -> None:
        seen.append((choice, token))
        if len(seen) == 2 * 3:                     # 3 steps of 2 rows, then stop
            cancel.set()

    res = RolloutEngine(model).generate([[1, 2, 3]], FREE.with_(max_tokens=50), n=2, seed=1, top_logprobs=4,
                                        on_token=on_token, cancel=cancel)[0]
    for i, r in enumerate(res):
        assert r.finish_reason == "cancelled" and len(r.token_ids) == 3
        assert [t for c, t in seen if c == i] == r.token_ids
        for tok, lp, top in zip(r.token_ids, r.logprobs, r.top_logprobs, strict=True):
            assert len(top) == 4 and [v for _, v in top] == sorted((v for _, v in top), reverse=True)
            assert lp <= top[0][1] + 1e-6
            if tok in dict(top):
                assert abs(dict(top)[tok] - lp) < 1e-6
    g = RolloutEngine(model).generate([[1, 2, 3]], GREEDY, top_logprobs=1)[0][0]
    assert [t[0][0] for t in g.top_logprobs] == g.token_ids                # greedy = the top-1


def test_hf_export_engine_matches_megatron(tmp_path):
    from tiny_export import tiny_checkpoint_and_export

    from train.generate import load_lm

    model, *_, hf, _ = tiny_checkpoint_and_export(tmp_path, "tiny_dense")
    lm, _, _ = load_lm(hf)
    prompts = [[1, 2, 3, 4], [9, 8, 7, 6]]
    meg = RolloutEngine(model).generate(prompts, GREEDY, n=2)
    hfr = lm.engine.generate(prompts, GREEDY, n=2)
    for a, b in zip(sum(meg, []), sum(hfr, []), strict=True):
        assert a.token_ids == b.token_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4


def test_sample_batch_inverse_cdf_matches_candidates():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0, -1.0], [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    p = SamplingParams(temperature=1.0, top_p=0.9, top_k=4)
    u = torch.linspace(0, 1, 2001)[:-1]
    for row in range(2):
        idx, lp = candidates(logits[row], [], p)
        draws = sample_batch(logits[row].expand(len(u), -1), None, p, u)
        freq = torch.stack([(draws == i).float().mean() for i in idx])
        assert set(draws.tolist()) == set(idx.tolist())               # only candidates are drawn
        assert (freq - lp.exp()).abs().max() < 2e-3
    seen = torch.zeros(2, 6, dtype=torch.bool)
    seen[0, 0] = True                                                 # presence penalty demotes token 0
    assert sample_batch(logits, seen, SamplingParams(temperature=0, presence_penalty=1.5), u[:2]).tolist() == [1, 5]


def test_remote_engine_over_http(moe):
    """RemoteEngine against a real HTTP server answering /v1/completions vLLM-style (token-id
    strings, legacy logprobs) from the local engine: same tokens and logprobs."""
    local = RolloutEngine(moe)
    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            bodies.append(body)
            p = SamplingParams(temperature=body["temperature"], max_tokens=body["max_tokens"])
            r = local.generate([body["prompt"]], p, seed=body["seed"], top_logprobs=body["logprobs"])[0][0]
            lp = {"tokens": [f"token_id:{t}" for t in r.token_ids], "token_logprobs": r.logprobs,
                  "top_logprobs": [{f"token_id:{t}": v for t, v in top} for top in r.top_logprobs]}
            out = json.dumps({"choices": [{"text": "x", "logprobs": lp, "finish_reason": r.finish_reason}],
                              "usage": {"prompt_tokens": len(body["prompt"])}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

    from q3.llm import EndpointConfig

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = EndpointConfig(base_url=f"http://127.0.0.1:{server.server_port}/v1", model="tiny", max_retries=0,
                             concurrency=1)
        prompts = [[1, 2, 3], [4, 5, 6, 7]]
        got = RemoteEngine(cfg).generate(prompts, GREEDY, n=2, seed=5, top_logprobs=2)
    finally:
        server.shutdown()
    want = local.generate(prompts, GREEDY, n=2, top_logprobs=2)
    assert len(bodies) == 4 and {b["seed"] for b in bodies} == {row_seed(5, i, j) for i in (0, 1) for j in (0, 1)}
    assert all(b["prompt"] in prompts and b["return_tokens_as_token_ids"] for b in bodies)
    for a, b in zip(sum(got, []), sum(want, []), strict=True):
        assert a.token_ids == b.token_ids and a.finish_reason == b.finish_reason
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-6
        assert [t for t, _ in a.top_logprobs[0]] == [t for t, _ in b.top_logprobs[0]]


def test_chat_contract_on_token_logprobs_cancel(moe):
    from train.generate import MegatronLM, Tokenizer, chat

    lm, tok = MegatronLM(moe), Tokenizer()
    msgs = [{"role": "user", "content": "Hi /no_think"}]
    got: dict[int, list[int]] = {0: [], 1: []}
    outs = chat(lm, tok, msgs, n=2, seed=3, max_tokens=5, top_logprobs=2,
                on_token=lambda c, t: got[c].append(t))
    for i, o in enumerate(outs):
        assert got[i] == o.token_ids and len(o.token_ids) == 5 and o.finish_reason == "length"
        assert len(o.logprobs) == len(o.sampled) == len(o.top_logprobs) == 5 and all(o.sampled)
        assert all(lp < 0 for lp in o.logprobs)
    assert [o.token_ids for o in chat(lm, tok, msgs, n=2, seed=3, max_tokens=5)] == [o.token_ids for o in outs]
    cancel = threading.Event()
    cancel.set()
    outs = chat(lm, tok, msgs, n=2, seed=3, max_tokens=5, cancel=cancel)
    assert [(o.finish_reason, o.token_ids) for o in outs] == [("cancelled", [])] * 2
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    seen: list[int] = []
    js = chat(lm, tok, msgs, seed=1, json_schema=schema, on_token=lambda c, t: seen.append(t))[0]
    assert json.loads(js.content) in ({"ok": True}, {"ok": False}) and seen == js.token_ids
