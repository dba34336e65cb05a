"""The language registry (conf/languages.yaml): the languages the corpus targets, by family.

    reg = load_registry()
    reg.codes            # every targeted `lang` code, alternative scripts included
    reg.iso3_of_label    # lid.176 label -> ISO 639-3 code, for the targeted languages
    reg.by_code["cmn_Hant"].family   # 'Sino-Tibetan'
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator

from q3 import paths
from q3.config import ConfigError, Q3Config, load_yaml, validate


class Language(Q3Config):
    name: str
    code: str                                   # ISO 639-3 + "_" + ISO 15924, e.g. srp_Cyrl
    lid176: str | None = None                   # fastText lid.176 label (without __label__)
    alt_scripts: list[str] = Field(default_factory=list)
    family: str = ""
    group: str = ""

    @field_validator("code")
    @classmethod
    def _code_shape(cls, v: str) -> str:
        iso, _, script = v.partition("_")
        if len(iso) != 3 or len(script) != 4 or not iso.islower() or not script[0].isupper():
            raise ValueError(f"{v!r} is not ISO 639-3 + '_' + ISO 15924 (e.g. eng_Latn)")
        return v

    @property
    def iso3(self) -> str:
        return self.code.split("_")[0]

    @property
    def all_codes(self) -> list[str]:
        return [self.code] + [f"{self.iso3}_{s}" for s in self.alt_scripts]


class LanguageRegistry(Q3Config):
    languages: list[Language]

    @property
    def codes(self) -> set[str]:
        return {c for lang in self.languages for c in lang.all_codes}

    @property
    def by_code(self) -> dict[str, Language]:
        return {c: lang for lang in self.languages for c in lang.all_codes}

    @property
    def iso3_of_label(self) -> dict[str, str]:
        return {lang.lid176: lang.iso3 for lang in self.languages if lang.lid176}

    def families(self) -> dict[str, list[Language]]:
        out: dict[str, list[Language]] = {}
        for lang in self.languages:
            out.setdefault(lang.family, []).append(lang)
        return out


def parse_registry(data: dict, source: str = "languages.yaml") -> LanguageRegistry:
    fams = data.get("families")
    if not isinstance(fams, dict):
        raise ConfigError(f"{source}: expected a top-level `families:` mapping family -> group -> list")
    flat: list[dict] = []
    for family, groups in fams.items():
        if not isinstance(groups, dict):
            raise ConfigError(f"{source}: family {family!r} must map group names to lists of languages")
        for group, items in groups.items():
            for item in items or []:
                if not isinstance(item, dict):
                    raise ConfigError(f"{source}: {family}/{group}: entry {item!r} is not a mapping")
                flat.append({**item, "family": family, "group": group})
    reg = validate(LanguageRegistry, {"languages": flat}, source)
    seen: dict[str, str] = {}
    for lang in reg.languages:
        for code in lang.all_codes:
            if code in seen:
                raise ConfigError(f"{source}: language code {code} listed twice ({seen[code]}, {lang.name})")
            seen[code] = lang.name
    labels: dict[str, str] = {}
    for lang in reg.languages:   # zh -> cmn_Hans and cmn_Hant share one ISO 639-3 code: fine
        if lang.lid176 and labels.setdefault(lang.lid176, lang.iso3) != lang.iso3:
            raise ConfigError(f"{source}: lid176 label {lang.lid176!r} maps to two languages "
                              f"({labels[lang.lid176]}, {lang.iso3})")
    return reg


@lru_cache(maxsize=8)
def load_registry(path: str | None = None) -> LanguageRegistry:
    p = Path(path) if path else paths.CONF_DIR / "languages.yaml"   # read late: executors may move it
    if not p.is_file():
        raise ConfigError(f"language registry not found: {p}")
    return parse_registry(load_yaml(p), str(p))
