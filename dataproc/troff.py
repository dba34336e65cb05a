"""A small troff/man-page to plain-text converter (pure Python, no groff needed).

It understands the `man` macro package well enough for corpus text: headings, paragraphs,
fonts, the common escapes and special characters, fill/no-fill mode, tables (cells joined by
tabs). Layout (indentation, hyphenation, page width) is dropped on purpose: we want the words.
Pages that only redirect (`.so other.1`) return "".
"""

from __future__ import annotations

import re

# Named glyphs: \(xx and \[name]. Only the ones that occur in real pages matter.
_GLYPHS = {
    "em": "—", "en": "–", "hy": "-", "mi": "-", "aq": "'", "dq": '"', "lq": "“", "rq": "”",
    "oq": "‘", "cq": "’", "bu": "•", "co": "©", "rg": "®", "tm": "™", "de": "°", "ga": "`",
    "aa": "´", "ti": "~", "ha": "^", "ba": "|", "or": "|", "rs": "\\", "sl": "/", "sc": "§",
    "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "ua": "↑", "da": "↓", "<-": "←", "->": "→",
    "<=": "≤", ">=": "≥", "!=": "≠", "==": "≡", "mu": "×", "di": "÷", "+-": "±", "pl": "+",
    "eq": "=", "lh": "☜", "rh": "☞", "dg": "†", "ps": "¶", "ct": "¢", "Po": "£", "Eu": "€",
    "Ye": "¥", "ss": "ß", "ae": "æ", "AE": "Æ", "o/": "ø", "O/": "Ø", "lB": "[", "rB": "]",
    "lC": "{", "rC": "}", "la": "⟨", "ra": "⟩", "at": "@", "sh": "#", "Do": "$", "ul": "_",
    "ru": "_", "br": "│", "fm": "′", "sd": "″", "ne": "≠", "mc": "µ", "ff": "ff", "fi": "fi",
    "fl": "fl", "Fi": "ffi", "Fl": "ffl", "a\"": "˝", "a-": "¯", "a.": "˙", "a^": "^", "ab": "˘",
    "ac": "¸", "ad": "¨", "ah": "ˇ", "ao": "˚", "a~": "~", "ho": "˛", "-D": "Đ", "Sd": "ð",
    "TP": "Þ", "Tp": "þ", "OE": "Œ", "oe": "œ", "r!": "¡", "r?": "¿", "Bq": "„", "bq": "‚",
    "es": "∅", "if": "∞", "sr": "√", "no": "¬", "AN": "∧", "OR": "∨", "ca": "∩", "cu": "∪",
    "sb": "⊂", "sp": "⊃", "mo": "∈", "pd": "∂", "gr": "∇", "is": "∫", "pt": "∝", "ap": "∼",
    "~=": "≅", "~~": "≈", "*a": "α", "*b": "β", "*g": "γ", "*d": "δ", "*e": "ε", "*l": "λ",
    "*m": "μ", "*p": "π", "*s": "σ", "*t": "τ", "*W": "Ω", "*S": "Σ", "*D": "Δ", "ci": "○",
    "sq": "□", "rA": "⇒", "lA": "⇐", "hA": "⇔", "uA": "⇑", "dA": "⇓", "tno": "¬",
}
# Predefined strings \*x, \*(xx, \*[name] (man/an-ext, groff tmac).
_STRINGS = {"R": "®", "(Tm": "™", "(lq": "“", "(rq": "”", "lq": "“", "rq": "”", "Tm": "™",
            "S": "", "(HF": "", "HF": "", "Lq": "“", "Rq": "”"}

_ESCAPE = re.compile(
    r"""\\(?:
        f(?:\[[^\]]*\]|\(..|.)            # font change
      | s[-+]?(?:\d|\(\d\d|\[\d+\]|'[^']*')  # size change
      | \((..)                            # \(xx glyph -> group 1
      | \[([^\]]+)\]                      # \[name] glyph -> group 2
      | \*(\(..|\[[^\]]*\]|.)             # \*x string -> group 3
      | [hvwlLNbxXoDRSZkY]'[^']*'         # escapes with a quoted argument (N'..' is a glyph)
      | [nkgmMYV](?:\(..|\[[^\]]*\]|.)    # registers, colours
      | [$]\d
      | (.)                               # one-character escape -> group 4
    )""", re.VERBOSE | re.DOTALL)
_SIMPLE = {"-": "-", "e": "\\", "\\": "\\", "&": "", "|": "", "^": "", "0": " ", "~": " ", " ": " ",
           "c": "", "%": "", "'": "´", "`": "`", ".": ".", "t": "\t", "a": "", "d": "", "u": "",
           "r": "", "p": "", "z": "", "!": "", ":": "", "/": "", ",": "", "}": "", "{": "",
           "E": "\\", "\"": ""}
_REQUEST = re.compile(r"[ \t]*([^\s\\]+)[ \t]*(.*)")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]")

_FONT_MACROS = {"B", "I", "SM", "SB", "CW"}
_ALT_MACROS = {"BR", "RB", "IR", "RI", "BI", "IB"}
_PARA = {"PP", "LP", "P", "sp", "HP", "RS", "RE", "IP", "TP", "TQ", "EX", "EE", "UR", "UE", "MT",
         "ME", "SY", "YS", "PD", "in", "ti", "ns", "rs"}
_BREAK = {"br", "nf", "fi"}


def _unescape(s: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(1) is not None:
            return _GLYPHS.get(m.group(1), "")
        if m.group(2) is not None:
            name = m.group(2)
            if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}(_[0-9A-Fa-f]{4,6})*", name):
                return "".join(chr(int(p.lstrip("u"), 16)) for p in name.split("_"))
            return _GLYPHS.get(name, "")
        if m.group(3) is not None:
            key = m.group(3)
            return _STRINGS.get(key.strip("[]"), _STRINGS.get(key, ""))
        if m.group(4) is not None:
            return _SIMPLE.get(m.group(4), m.group(4))
        return ""
    return _ESCAPE.sub(sub, s)


def _args(rest: str) -> list[str]:
    """Split macro arguments: blanks separate, double quotes group, "" inside quotes is a quote."""
    out: list[str] = []
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == '"':
            i += 1
            buf = []
            while i < n:
                if rest[i] == '"':
                    if i + 1 < n and rest[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(rest[i])
                i += 1
            out.append("".join(buf))
        else:
            j = i
            while j < n and rest[j] not in " \t":
                j += 1
            out.append(rest[i:j])
            i = j
    return out


def _strip_comment(line: str) -> str:
    # \" starts a comment; \\" is an escaped backslash followed by a quote.
    i = 0
    while True:
        i = line.find('\\"', i)
        if i < 0:
            return line
        k = i - 1
        slashes = 0
        while k >= 0 and line[k] == "\\":
            slashes += 1
            k -= 1
        if slashes % 2 == 0:
            return line[:i].rstrip() if line[:i].strip() else line[:i]
        i += 2


def troff_to_text(src: str) -> str:
    """Convert a man page's troff source to plain text ("" for `.so` redirects)."""
    out: list[str] = []         # finished blocks (paragraphs, headings)
    para: list[str] = []        # lines of the current filled paragraph
    fill = True
    skip_until: str | None = None   # inside .ig/.de ... until this terminator
    defined: set[str] = set()    # macros the page defines itself: plumbing, their calls are dropped
    depth = 0                   # inside a conditional \{ ... \} block (skipped: macro plumbing)
    in_table = 0                # 0 no, 1 reading options/format, 2 reading data

    def flush() -> None:
        if para:
            if fill:
                text = ""
                for piece in para:
                    piece = piece.strip()
                    if not piece:
                        continue
                    if text and not (_CJK.match(piece[0]) and _CJK.match(text[-1])):
                        text += " "
                    text += piece
                out.append(re.sub(r"[ \t]{2,}", " ", text))
            else:
                out.append("\n".join(p.rstrip() for p in para))
            para.clear()

    lines = src.replace("\r\n", "\n").split("\n")
    # Join continuation lines (a trailing unescaped backslash).
    joined: list[str] = []
    carry = ""
    for line in lines:
        if line.endswith("\\") and not line.endswith("\\\\"):
            carry += line[:-1]
            continue
        joined.append(carry + line)
        carry = ""
    if carry:
        joined.append(carry)

    for raw in joined:
        if skip_until is not None:
            if raw.strip().startswith(skip_until):
                skip_until = None
            continue
        if depth:
            depth += raw.count("\\{") - raw.count("\\}")
            depth = max(depth, 0)
            continue
        line = _strip_comment(raw)
        if raw.startswith(('.\\"', "'\\\"", '.\\#')) or raw.strip() in ('.', "'"):
            continue
        if in_table:
            if raw.startswith(".TE"):
                in_table = 0
                flush()
                continue
            if in_table == 1:
                if line.rstrip().endswith("."):
                    in_table = 2
                continue
            if line.startswith(".") or line.strip() in ("_", "=", ""):
                continue
            cells = [_unescape(c).strip() for c in re.split(r"\t|T\{|T\}", line)]
            para.append("\t".join(c for c in cells if c))
            continue
        if line.startswith((".", "'")) and len(line) > 1:
            m = _REQUEST.match(line[1:])
            if m is None:
                continue
            name, rest = m.group(1), m.group(2)
            args = [_unescape(a) for a in _args(rest)]
            if name == "so":
                return ""
            if name in ("ie", "if", "el", "while") and "\\{" in line:
                depth = max(line.count("\\{") - line.count("\\}"), 0)
                if ".de" in line.partition("\\{")[2]:
                    skip_until = ".."
                continue
            if name in ("ig",):
                skip_until = "." + (args[0] if args else ".")
                continue
            if name in ("de", "de1", "am", "ds1"):
                skip_until = ".."
                if rest.split():
                    defined.add(rest.split()[0])
                continue
            if name in ("TH",):
                flush()
                if args:
                    out.append(" ".join(a for a in args[:1] if a) + (f"({args[1]})" if len(args) > 1 else ""))
                continue
            if name in ("SH", "SS"):
                flush()
                if args:
                    out.append(" ".join(args).strip())
                continue
            if name == "TS":
                flush()
                in_table = 1
                continue
            if name in ("nf", "EX"):
                flush()
                fill = False
                continue
            if name in ("fi", "EE"):
                flush()
                fill = True
                continue
            if name in ("IP", "TP", "TQ", "HP"):
                flush()
                if name == "IP" and args and args[0]:
                    para.append(args[0])
                continue
            if name in _PARA:
                flush()
                if name in ("UR", "MT") and args:
                    para.append(args[0])
                continue
            if name in _BREAK:
                flush() if not fill else para.append("")
                continue
            if name in _FONT_MACROS:
                if args:
                    para.append(" ".join(args))
                continue
            if name in _ALT_MACROS:
                para.append("".join(args))
                continue
            if name in ("OP",):
                para.append("[" + " ".join(args) + "]")
                continue
            if name in ("ie", "if", "el", "nr", "ds", "ft", "ad", "na", "nh", "hy", "ll", "ta",
                        "ne", "ps", "vs", "fam", "mso", "cc", "c2", "ec", "eo", "tr", "ss", "cs",
                        "bp", "pl", "lt", "po", "ev", "rm", "rn", "als", "so", "hw", "chop", "char",
                        "PD", "DT", "UC", "tm", "ab", "it", "wh", "ch", "return", "do", "AT", "RP", "ce", "ul", "cu", "mk", "sv", "os", "ev"):
                # Requests that change layout or define things: no text of their own.
                continue
            if name in defined or name.islower():
                continue   # page-local macros and troff requests we do not model
            # Unknown macro: keep its arguments (better some noise than lost words).
            if args:
                para.append(" ".join(args))
            continue
        text = _unescape(line)
        if not fill:
            para.append(text)
        elif not text.strip():
            flush()
        else:
            para.append(text)
    flush()
    body = "\n\n".join(b for b in out if b.strip())
    return re.sub(r"\n{3,}", "\n\n", body).strip() + "\n" if body.strip() else ""
