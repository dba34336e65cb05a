"""PII redaction: e-mail addresses, IP addresses, phone numbers, payment card numbers.

Each match becomes a typed placeholder (`<EMAIL>`, `<IP>`, `<PHONE>`, `<CARD>`) and is counted in
`quality.pii_*`. Nothing is rejected: redaction keeps the document.

Cheap first, exact second: an Arrow regex kernel marks the rows that could hold any PII (an `@`,
a digit run, a `::`), and only those rows go through the Python matchers, which validate what a
regex alone cannot (IP octets via `ipaddress`, card numbers via Luhn and issuer prefix, phone
digit counts) to keep false positives in technical text (versions, dates, sizes) down.
"""

from __future__ import annotations

import ipaddress
import re

import pyarrow as pa
import pyarrow.compute as pc

from dataproc.config import PiiConfig
from dataproc.stage import conform
from q3.schemas import QUALITY_TYPE

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@(?:[A-Za-z0-9-]{1,63}\.)+[A-Za-z]{2,24}\b")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?:%\w+)?(?![\w:])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(r"(?<![\w+/.-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,8}){1,5}(?![\w/]|[.-]\d)"
                    r"|(?<![\w+/.-])\+\d{8,15}(?!\w)")
_PREFILTER = r"@|\d[\d .()+-]{6,}\d|[0-9A-Fa-f]*:[0-9A-Fa-f]*:"
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|6011|65|64[4-9]|62|35)")


def luhn_valid(digits: str) -> bool:
    """Luhn checksum (ISO/IEC 7812) over a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and bool(_CARD_PREFIX.match(digits)) and luhn_valid(digits)


class PiiStage:
    name = "pii"

    def __init__(self, cfg: PiiConfig | None = None) -> None:
        self.cfg = cfg or PiiConfig()
        self.kinds = list(self.cfg.kinds)
        self.ph = {k: self.cfg.placeholders.get(k, f"<{k.upper()}>") for k in ("email", "ip", "phone", "card")}

    # Each matcher returns (new_text, count); order matters: e-mails before IPs (hosts), cards
    # before phones (a card number also looks like a long phone number).
    def _email(self, text: str) -> tuple[str, int]:
        return _EMAIL.subn(self.ph["email"], text)

    def _ip(self, text: str) -> tuple[str, int]:
        n = 0
        keep_private = self.cfg.keep_private_ips

        def v4(m: re.Match[str]) -> str:
            nonlocal n
            try:
                addr = ipaddress.IPv4Address(m.group(0))
            except ValueError:
                return m.group(0)
            if keep_private and (addr.is_private or addr.is_loopback or addr.is_unspecified):
                return m.group(0)
            n += 1
            return self.ph["ip"]

        def v6(m: re.Match[str]) -> str:
            nonlocal n
            s = m.group(0)
            if sum(c in "0123456789abcdefABCDEF" for c in s) < 3:   # "::", "a::b" in C++/Perl text
                return s
            try:
                addr = ipaddress.IPv6Address(s.split("%")[0])
            except ValueError:
                return s
            if keep_private and (addr.is_private or addr.is_loopback or addr.is_link_local):
                return s
            n += 1
            return self.ph["ip"]

        text = _IPV4.sub(v4, text)
        if "::" in text or text.count(":") >= 5:
            text = _IPV6.sub(v6, text)
        return text, n

    def _card(self, text: str) -> tuple[str, int]:
        n = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal n
            if _is_card(m.group(0)):
                n += 1
                return self.ph["card"]
            return m.group(0)

        return _CARD.sub(sub, text), n

    def _phone(self, text: str) -> tuple[str, int]:
        n = 0
        lo, hi = self.cfg.phone_min_digits, self.cfg.phone_max_digits

        def sub(m: re.Match[str]) -> str:
            nonlocal n
            s = m.group(0)
            digits = sum(c.isdigit() for c in s)
            if not lo <= digits <= hi:
                return s
            international = s.startswith("+") or "(" in s
            seps = {c for c in s if c in " .-"}
            # Without a +country or (area) prefix, demand one separator kind and either the NANP
            # grouping 3-3-4 or a trunk prefix 0: excludes versions, dates, tables of numbers.
            if not international:
                if len(seps) != 1:
                    return s
                groups = re.split(r"[ .-]", s)
                sizes = [len(g) for g in groups]
                if sizes != [3, 3, 4] and not (groups[0].startswith("0") and min(sizes) >= 2
                                               and "." not in seps):
                    return s
            n += 1
            return self.ph["phone"]

        return _PHONE.sub(sub, text), n

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        counts = {}
        for kind in ("email", "ip", "card", "phone"):
            if kind in self.kinds:
                text, counts[kind] = getattr(self, f"_{kind}")(text)
        return text, counts

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        batch = conform(batch)
        names = batch.schema.names
        text_col = batch.column("text")
        n = batch.num_rows
        maybe = pc.fill_null(pc.match_substring_regex(text_col, _PREFILTER), False)
        counts = {k: [0] * n for k in ("email", "ip", "phone", "card")}
        if pc.any(maybe).as_py():
            texts = text_col.to_pylist()
            for i in pc.indices_nonzero(maybe).to_pylist():
                new, c = self.redact(texts[i])
                texts[i] = new
                for k, v in c.items():
                    counts[k][i] = v
            text_col = pa.array(texts, pa.string())
            batch = batch.set_column(names.index("text"), "text", text_col)
            batch = batch.set_column(names.index("n_chars"), "n_chars",
                                     pc.fill_null(pc.utf8_length(text_col).cast(pa.int64()), 0))
        old = batch.column("quality")
        has_old = old.null_count < n
        children = []
        for field in QUALITY_TYPE:
            if field.name.startswith("pii_"):
                children.append(pa.array(counts[field.name[4:]], field.type))
            elif has_old:
                children.append(pc.struct_field(old, field.name))
            else:
                children.append(pa.nulls(n, field.type))
        quality = pa.StructArray.from_arrays(children, fields=list(QUALITY_TYPE))
        return batch.set_column(names.index("quality"), "quality", quality)
