"""Prompt templates for synthetic generation (conf/synth/templates/<name>.yaml).

A template says which seed documents it applies to (languages, sources, length), how to render the
request (system + user text with {text}, {language}, {n_items}), whether the reply is free text or
JSON (then sent with a JSON-schema `response_format`, i.e. structured outputs), and its sampling
parameters. `per_language` templates fan out to one request per target language.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from q3.config import Q3Config, load_config
from q3.paths import CONF_DIR

LANG_NAMES = {
    "eng_Latn": "English", "deu_Latn": "German", "fra_Latn": "French", "spa_Latn": "Spanish",
    "ita_Latn": "Italian", "por_Latn": "Portuguese", "nld_Latn": "Dutch", "pol_Latn": "Polish",
    "rus_Cyrl": "Russian", "ukr_Cyrl": "Ukrainian", "cmn_Hans": "Simplified Chinese",
    "cmn_Hant": "Traditional Chinese", "jpn_Jpan": "Japanese", "kor_Hang": "Korean", "arb_Arab": "Arabic",
    "hin_Deva": "Hindi", "tur_Latn": "Turkish", "vie_Latn": "Vietnamese", "ind_Latn": "Indonesian",
    "swe_Latn": "Swedish", "ces_Latn": "Czech", "fin_Latn": "Finnish", "hun_Latn": "Hungarian",
    "ell_Grek": "Greek", "heb_Hebr": "Hebrew", "tha_Thai": "Thai",
}


def language_name(code: str | None) -> str:
    if not code or code.startswith("code_") or code.startswith("und"):
        return "English"
    return LANG_NAMES.get(code, code)


class AppliesTo(Q3Config):
    langs: list[str] = Field(default_factory=lambda: ["*"])       # glob patterns over `lang`
    exclude_langs: list[str] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=lambda: ["*"])     # glob patterns over `source`


class Template(Q3Config):
    name: str
    description: str = ""
    applies_to: AppliesTo = Field(default_factory=AppliesTo)
    per_language: bool = False
    min_input_chars: int = 0
    max_input_chars: int = 6000        # longer seeds are cut (at a line break when possible)
    output: Literal["text", "json"] = "text"
    json_schema: dict[str, Any] | None = None
    params: dict[str, Any] = Field(default_factory=dict)   # temperature, top_p, max_tokens, ...
    system: str = ""
    user: str

    def applies(self, doc: dict[str, Any]) -> bool:
        lang, source = doc.get("lang") or "", doc.get("source") or ""
        text = doc.get("text") or ""
        return (len(text) >= self.min_input_chars
                and any(fnmatch.fnmatch(lang, p) for p in self.applies_to.langs)
                and not any(fnmatch.fnmatch(lang, p) for p in self.applies_to.exclude_langs)
                and any(fnmatch.fnmatch(source, p) for p in self.applies_to.sources))

    def digest(self) -> str:
        """Hash of everything that shapes the request: part of every row's provenance."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def messages(self, doc: dict[str, Any], language: str | None = None, n_items: int = 3
                 ) -> list[dict[str, str]]:
        text = _cut(doc.get("text") or "", self.max_input_chars)
        lang_name = language_name(language or doc.get("lang"))
        user = self.user.format(text=text, language=lang_name, n_items=n_items)
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": user}]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text.rfind("\n", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def load_template(name: str) -> Template:
    return load_config(Template, "synth/templates", name)


def available_templates() -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / "synth" / "templates").glob("*.yaml"))
