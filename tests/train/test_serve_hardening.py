"""One request cannot stall `q3 serve` (issue 13): a real server process on a free port serving a
tiny exported Qwen3, driven over real sockets. Abandoned work is cancelled (the next request is
served promptly), slow or short bodies time out, bad framing and bad values get a one-line 4xx,
a huge prompt is refused before it is tokenized, SIGTERM mid-generation exits 0."""

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import child_env
from tiny_export import tiny_checkpoint_and_export

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 1.5                                   # the server's read_timeout_s
HI = [{"role": "user", "content": "Hello there! /no_think"}]
LONG = {"messages": HI, "n": 16, "max_tokens": 4000, "seed": 0, "temperature": 1.0}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardening")
    hf = tiny_checkpoint_and_export(tmp, "tiny_dense")[3]
    port_file, log = tmp / "port", tmp / "serve.log"
    with open(log, "w") as err:                 # a file, not a pipe nobody drains
        proc = subprocess.Popen(
            [sys.executable, "-m", "q3.cli", "serve", f"load={hf}", "port=0", f"port_file={port_file}",
             f"read_timeout_s={TIMEOUT}"],
            cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.time() + 180
    while not port_file.exists():
        assert proc.poll() is None, log.read_text()[-2000:]
        assert time.time() < deadline, "q3 serve did not start"
        time.sleep(0.2)
    port = int(port_file.read_text())
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
        yield proc, port, c, log
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert "Traceback" not in log.read_text()


def post_bytes(body: bytes, headers: bytes = b"") -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (len(body), headers, body))


def raw(port: int, data: bytes) -> tuple[int, dict]:
    """Send bytes on a fresh socket; (status, JSON body) of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(data)
        reply = b""
        while b"\r\n\r\n" not in reply or len(reply.split(b"\r\n\r\n", 1)[1]) < _length(reply):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body or b"{}")


def _length(reply: bytes) -> int:
    for line in reply.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return int(v)
    return 0


def timed_short(c: httpx.Client) -> float:
    t = time.monotonic()
    r = c.post("/v1/chat/completions", json={"messages": HI, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2
    return time.monotonic() - t


def wait_running(c: httpx.Client) -> dict:
    for _ in range(1000):                       # bounded: ~10 s
        h = c.get("/health").json()
        if h["running"]:
            return h
        time.sleep(0.01)
    raise AssertionError(f"the long request never ran: {h}")


@pytest.mark.parametrize("stream", [False, True])
def test_abandoned_request_frees_the_model(server, stream):
    """n=16 x 4,000 tokens (minutes of CPU), the client leaves once it runs: the next short request
    is answered about as fast as one on an idle server, and the abandoned rows stopped."""
    _, port, c, _ = server
    baseline = min(timed_short(c) for _ in range(2))
    before = c.get("/health").json()["generated_tokens"]
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(post_bytes(json.dumps({**LONG, "stream": stream}).encode()))
    wait_running(c)
    time.sleep(0.5)
    s.close()
    waited = timed_short(c)
    assert waited < 20 * baseline + 5, (waited, baseline)
    generated = c.get("/health").json()["generated_tokens"] - before
    assert generated < 16 * 4000 // 4, generated          # cut short, not run to the end


def test_abandoned_json_schema_request_is_cancelled(server):
    """The constrained decoder (one full forward per token, no cancellation of its own) stops too."""
    _, port, c, _ = server
    baseline = min(timed_short(c) for _ in range(2))
    schema = {"type": "array", "minItems": 40, "maxItems": 40, "items": {"type": "string", "minLength": 30,
                                                                        "maxLength": 30}}
    body = {"messages": HI, "n": 4, "seed": 0, "response_format": {"type": "json_schema",
                                                                   "json_schema": {"name": "x", "schema": schema}}}
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(post_bytes(json.dumps(body).encode()))
    wait_running(c)
    time.sleep(0.5)
    s.close()
    waited = timed_short(c)
    assert waited < 20 * baseline + 5, (waited, baseline)


def drip(port: int, head: bytes, byte: bytes, every: float = 0.4, most: float = 15.0) -> tuple[bytes, float]:
    """Send `head`, then one `byte` every `every` s (each under the idle timeout) until the server
    answers or closes; (what it sent, seconds it took)."""
    t = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head)
        while time.monotonic() - t < most:
            try:
                s.sendall(byte)
            except OSError:                     # closed by the server
                return b"", time.monotonic() - t
            readable, _, _ = socket_select(s, every)
            if readable:
                try:
                    return s.recv(65536), time.monotonic() - t
                except OSError:
                    return b"", time.monotonic() - t
    return b"<still open>", time.monotonic() - t


def socket_select(s: socket.socket, wait: float):
    import select

    return select.select([s], [], [], wait)


def test_slow_clients_time_out(server):
    """read_timeout_s bounds the whole request from its first byte, not just each recv: a body or
    headers dripped a byte at a time are cut off; a silent connection is closed."""
    _, port, _, _ = server
    reply, took = drip(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n", b" ")
    assert reply.startswith(b"HTTP/1.1 408") and took < 10, (reply[:60], took)
    reply, took = drip(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", b"X")
    assert reply in (b"", b"<still open>") or reply.startswith(b"HTTP/1.1 4"), reply[:60]
    assert reply != b"<still open>" and took < 10, took
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        t = time.monotonic()
        assert s.recv(10) == b"" and time.monotonic() - t < 10     # idle: closed after ~read_timeout_s


def test_bad_framing_gets_4xx(server):
    _, port, _, _ = server
    body = b'{"messages": [{"role": "user", "content": "x"}]}'
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n%s\r\n"
    for length, code in [(b"-1", 400), (b"+5", 400), (b"1_0", 400), (b"many", 400), (b"100", 408),
                         (b"%d" % (9 << 20), 413)]:
        status, err = raw(port, head % (b"Content-Length: " + length + b"\r\n") + body)
        assert status == code and err["error"]["code"] == code, (length, status, err)
    status, err = raw(port, head % b"Content-Length: 5\r\nContent-Length: 49\r\n" + body)
    assert status == 400 and "Content-Length" in err["error"]["message"]


NESTED = b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
BAD = {
    "nested 100k": NESTED,
    "nested 100": b'{"messages": [{"role": "user", "content": "x"}], "x": ' + b"[" * 100 + b"]" * 100 + b"}",
    "seed 2**70": {"seed": 2**70}, "seed 2**63": {"seed": 2**63}, "seed 1.5": {"seed": 1.5},
    "temperature NaN": b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}',
    "temperature Infinity": b'{"messages": [{"role": "user", "content": "x"}], "temperature": -Infinity}',
    "temperature 1e999": b'{"messages": [{"role": "user", "content": "x"}], "temperature": 1e999}',
    "temperature 10**400": {"temperature": 10**400},
    "int of 5000 digits": b'{"messages": [{"role": "user", "content": "x"}], "top_k": ' + b"9" * 5000 + b"}",
    "temperature 3": {"temperature": 3}, "top_p 1.5": {"top_p": 1.5}, "top_p str": {"top_p": "0.5"},
    "presence_penalty -inf": b'{"messages": [{"role": "user", "content": "x"}], "presence_penalty": -1e999}',
    "n 1e30": {"n": 1e30}, "n 0": {"n": 0}, "max_tokens 0": {"max_tokens": 0},
    "json_schema not an object": {"response_format": {"type": "json_schema", "json_schema": "x"}},
    "schema a list": {"response_format": {"type": "json_schema", "json_schema": {"schema": [1]}}},
    "schema maxItems huge": {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "array", "maxItems": 10**6}}}},
    "schema minItems > maxItems": {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "array", "minItems": 5, "maxItems": 2}}}},
    "schema empty enum": {"response_format": {"type": "json_schema", "json_schema": {"schema": {"enum": []}}}},
    "schema maxLength str": {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "string", "maxLength": "9"}}}},
    "schema minimum str": {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "integer", "minimum": "a", "maximum": 3}}}},
    "schema properties list": {"response_format": {"type": "json_schema", "json_schema": {"schema": {
        "type": "object", "properties": [1]}}}},
    "max_tokens beyond the context": {"max_tokens": 4096},
}


def test_bad_values_get_a_one_line_400(server):
    _, port, c, log = server
    for name, bad in BAD.items():
        data = bad if isinstance(bad, bytes) else json.dumps({"messages": HI, "max_tokens": 2, **bad}).encode()
        status, err = raw(port, post_bytes(data))
        msg = err.get("error", {}).get("message", "")
        assert status == 400 and msg and "\n" not in msg and len(msg) < 400, (name, status, err)
    status, err = raw(port, post_bytes(json.dumps({"messages": HI, "max_tokens": 4090}).encode()))
    assert status == 400 and "4096 tokens" in err["error"]["message"] and "4090 to generate" in err["error"]["message"]
    assert timed_short(c) >= 0                  # still serving
    assert "Traceback" not in log.read_text()


def test_huge_prompt_is_refused_before_tokenizing(server):
    """4 MB of text: 400 from a bound on its bytes (no token stands for more than 128 bytes), not
    after tokenizing it (seconds) or allocating a cache for it (the issue saw 56 GB)."""
    _, port, c, _ = server
    status, err = raw(port, post_bytes(json.dumps({"messages": [{"role": "user", "content": "hello " * 700_000}]}
                                                  ).encode()))
    assert status == 400 and "at least 32813 tokens" in err["error"]["message"], err
    assert "maximum context length is 4096" in err["error"]["message"]
    assert timed_short(c) >= 0


def test_sigterm_during_generation_exits_0(server):
    """Last: stops the module's server. A non-streamed n=16 request is generating and a streamed
    one waits behind it (other settings): SIGTERM answers the first 503, ends the stream without
    [DONE], and the process exits 0 promptly."""
    proc, port, c, log = server
    replies: dict[str, object] = {}

    def waiting_client() -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
            s.sendall(post_bytes(json.dumps(LONG).encode()))
            replies["long"] = s.recv(65536)

    def stream_client() -> None:
        body = {**LONG, "n": 1, "temperature": 0.5, "stream": True}
        with httpx.Client(timeout=60) as h, h.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions",
                                                     json=body) as r:
            replies["stream"] = list(r.iter_lines())

    threads = [threading.Thread(target=waiting_client)]
    threads[0].start()
    wait_running(c)
    threads.append(threading.Thread(target=stream_client))
    threads[1].start()
    for _ in range(1000):
        if c.get("/health").json()["queued"]:
            break
        time.sleep(0.01)
    t = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    took = time.monotonic() - t
    for th in threads:
        th.join(timeout=30)
    assert replies["long"].startswith(b"HTTP/1.1 503") and b"Connection: close" in replies["long"], \
        replies["long"][:200]
    assert "data: [DONE]" not in replies["stream"]
    assert took < 15, took
    assert "Traceback" not in log.read_text()


def test_scheduler_survives_a_withdraw_during_its_batch_window():
    """A client leaving while the scheduler waits for more arrivals emptied the queue under it
    (IndexError killed the thread: every later request hung)."""
    from train.serve_batch import Scheduler, Work

    ran: list[str] = []
    sched = Scheduler(lambda batch: [(ran.append(w.payload), w.finish("ok")) for w in batch], max_batch=4,
                      cancelled_result=lambda w: "cancelled", window_s=0.3)
    first = sched.submit(Work("first", key="k"))
    time.sleep(0.05)                            # the scheduler is inside its window
    assert sched.withdraw(first) and first.events.get(timeout=5) == ("done", "cancelled")
    time.sleep(0.4)                             # past the window
    second = sched.submit(Work("second", key="k"))
    assert second.events.get(timeout=5) == ("done", "ok") and ran == ["second"]
    assert sched.close(timeout=5)


def test_scheduler_close_waits_for_the_running_batch():
    from train.serve_batch import Scheduler, Work

    release = threading.Event()
    sched = Scheduler(lambda batch: [(release.wait(10), w.finish("ok")) for w in batch], max_batch=1,
                      cancelled_result=lambda w: "cancelled")
    running, queued = sched.submit(Work("a", key=None)), sched.submit(Work("b", key=None))
    for _ in range(500):
        if sched.stats()["running"]:
            break
        time.sleep(0.01)
    assert not sched.close(timeout=0.2)         # still inside run(): not stopped
    assert queued.events.get(timeout=5) == ("done", "cancelled")      # queued work never runs
    release.set()
    assert sched.close(timeout=5) and running.events.get(timeout=5) == ("done", "ok")
