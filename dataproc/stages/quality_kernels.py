"""Compiled (numba) inner loop of the Gopher repetition rules: every n-gram statistic in one call.

Per document and per n this replaces a stable argsort + grouping (several numpy calls, whose fixed
cost dominated on short documents) with one pass over an open-addressing hash table. Gram hashes
are the same polynomial over word ids as before (ids from first occurrence), so the values equal
those of the former numpy path, ties included.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_PRIME = np.uint64(1_000_003)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, nogil=True)
def ngram_chars(ids: np.ndarray, wlen: np.ndarray, top_k: np.ndarray, dup_k: np.ndarray,
                compat: bool) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(characters of the top n-gram x its count per n in top_k, characters in repeated n-grams per
    n in dup_k). ids: uint64 word ids >= 1; wlen: word lengths. compat: datatrove's variants (top
    gram = the first-seen of the most frequent, with spaces; repeats counted greedily)."""
    n = len(ids)
    top_out = np.zeros(len(top_k), np.int64)
    dup_out = np.zeros(len(dup_k), np.int64)
    csum = np.zeros(n + 1, np.int64)
    for i in range(n):
        csum[i + 1] = csum[i] + wlen[i]
    max_k = 1
    for k in top_k:
        max_k = max(max_k, k)
    for k in dup_k:
        max_k = max(max_k, k)
    cap = 16
    while cap < 2 * n:
        cap *= 2
    mask = np.uint64(cap - 1)
    shift = np.uint64(64 - int(np.log2(cap)))
    keys = np.empty(cap, np.uint64)
    used = np.zeros(cap, np.bool_)
    cnt = np.zeros(cap, np.int64)
    first = np.zeros(cap, np.int64)
    flag = np.zeros(cap, np.bool_)
    slot_of = np.empty(n, np.int64)
    cover = np.zeros(n + 1, np.int64)
    h = ids.copy()
    for k in range(2, max_k + 1):
        m = n - k + 1
        if m <= 0:
            break
        for i in range(m):
            h[i] = h[i] * _PRIME + ids[i + k - 1]
        ti = -1
        for j in range(len(top_k)):
            if top_k[j] == k:
                ti = j
        di = -1
        for j in range(len(dup_k)):
            if dup_k[j] == k:
                di = j
        if ti < 0 and di < 0:
            continue
        used[:] = False
        distinct = 0
        for i in range(m):
            g = h[i]
            s = ((g * _MIX) >> shift) & mask
            while used[s] and keys[s] != g:
                s = (s + np.uint64(1)) & mask
            if not used[s]:
                used[s] = True
                keys[s] = g
                cnt[s] = 0
                first[s] = i
                distinct += 1
            cnt[s] += 1
            slot_of[i] = s
        if distinct == m and compat:
            # no k-gram repeats, so no longer one does: nothing repeated for any n >= k, and each
            # top n-gram is the first one, seen once (datatrove keeps the first of equal counts)
            for j in range(len(top_k)):
                if top_k[j] >= k and top_k[j] <= n:
                    top_out[j] = csum[top_k[j]] + top_k[j] - 1
            break
        if ti >= 0:
            best_c = 0
            best_len = 0
            for i in range(m):      # first occurrences in order: a tie keeps the first seen
                s = slot_of[i]
                if first[s] != i:
                    continue
                c = cnt[s]
                length = csum[i + k] - csum[i]
                if compat:
                    length += k - 1
                if c > best_c or (c == best_c and not compat and length > best_len):
                    best_c = c
                    best_len = length
            top_out[ti] = best_len * best_c
        if di >= 0:
            total = 0
            if compat:   # datatrove's find_all_duplicate: a repeat adds its chars and skips its words
                flag[:] = False
                i = 0
                while i < m:
                    s = slot_of[i]
                    if flag[s]:
                        total += csum[i + k] - csum[i]
                        i += k
                    else:
                        flag[s] = True
                        i += 1
            else:        # Gopher: characters inside any repeated occurrence, each counted once
                cover[:] = 0
                for i in range(m):
                    if first[slot_of[i]] != i:
                        cover[i] += 1
                        cover[i + k] -= 1
                run = 0
                for i in range(n):
                    run += cover[i]
                    if run > 0:
                        total += wlen[i]
            dup_out[di] = total
    return top_out, dup_out


# ---- compiled text pass of datatrove_compat mode ------------------------------------------------
# Character classes, one byte per code point (built by quality_compat.char_tables from Python's own
# `re` / str methods, so they match the regexes they replace exactly).
C_WORD = 1        # re \w
C_SPACE = 2       # re \s (= str.isspace, what strip()/split() use)
C_DIGIT = 4       # re \d
C_PUNCT = 8       # datatrove PUNCTUATION
C_TERM = 16       # datatrove TERMINAL_PUNCTUATION
C_BREAK = 32      # a str.splitlines() boundary

# columns of compat_signals' output (counts, exact in float64)
(S_N_TOK, S_N_SYM, S_SYM_CHARS, S_TOK_CHARS, S_ALPHA, S_HASH, S_ELLIPSIS, S_N_LINES, S_BULLET, S_ELL_LINES,
 S_STOP, S_LEN, S_N_PARAS, S_DUP_PARAS, S_DUP_PARA_CHARS, S_N_RLINES, S_DUP_RLINES, S_DUP_RLINE_CHARS,
 S_C4_SENT, S_C4_KEPT, S_C4_DOC, S_FW_LINES, S_FW_PUNCT, S_FW_SHORT, S_FW_DUP_CHARS, S_NEWLINES) = range(26)
N_FIXED = 26      # then len(top_k) top-gram chars, then len(dup_k) repeated-gram chars
C4_LOREM, C4_CURLY = 1, 2   # S_C4_DOC: the first document-level C4 rule a kept line triggered

_FNV = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


@njit(cache=True, nogil=True)
def decode_utf8(data: np.ndarray, a: int, b: int, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Code points of the valid UTF-8 bytes data[a:b] into out; returns their number."""
    i = a
    n = 0
    while i < b:
        c = np.int32(data[i])
        if c < 0x80:
            i += 1
        elif c < 0xE0:
            c = ((c & 0x1F) << 6) | (np.int32(data[i + 1]) & 0x3F)
            i += 2
        elif c < 0xF0:
            c = ((c & 0x0F) << 12) | ((np.int32(data[i + 1]) & 0x3F) << 6) | (np.int32(data[i + 2]) & 0x3F)
            i += 3
        else:
            c = (((c & 0x07) << 18) | ((np.int32(data[i + 1]) & 0x3F) << 12)
                 | ((np.int32(data[i + 2]) & 0x3F) << 6) | (np.int32(data[i + 3]) & 0x3F))
            i += 4
        out[n] = c
        n += 1
    return n


@njit(cache=True, nogil=True)
def tokenize(cps: np.ndarray, n: int, flags: np.ndarray, starts: np.ndarray,
             ends: np.ndarray) -> int:  # pragma: no cover - compiled
    """The matches of quality_compat's `\\w+(?:['’\\-]\\w+)*|[^\\w\\s]+` in cps[:n], as spans; returns
    their number. A word run, then (joiner, word run) pairs while a joiner is followed by a word
    char; otherwise a maximal run of chars that are neither word nor space."""
    i = 0
    k = 0
    while i < n:
        f = flags[cps[i]]
        if f & C_WORD:
            j = i + 1
            while j < n and flags[cps[j]] & C_WORD:
                j += 1
            while j + 1 < n and (cps[j] == 39 or cps[j] == 0x2019 or cps[j] == 45) and flags[cps[j + 1]] & C_WORD:
                j += 2
                while j < n and flags[cps[j]] & C_WORD:
                    j += 1
        elif f & C_SPACE:
            i += 1
            continue
        else:
            j = i + 1
            while j < n and not flags[cps[j]] & (C_WORD | C_SPACE):
                j += 1
        starts[k] = i
        ends[k] = j
        k += 1
        i = j
    return k


@njit(cache=True, nogil=True)
def _span_hash(cps: np.ndarray, a: int, b: int) -> np.uint64:  # pragma: no cover - compiled
    h = _FNV
    for i in range(a, b):
        h = (h ^ np.uint64(cps[i])) * _FNV_PRIME
    return h ^ np.uint64(b - a)


@njit(cache=True, nogil=True)
def _span_eq(cps: np.ndarray, a: int, b: int, c: int, d: int) -> bool:  # pragma: no cover - compiled
    if b - a != d - c:
        return False
    for i in range(b - a):  # noqa: SIM110 - a loop numba compiles to a plain loop
        if cps[a + i] != cps[c + i]:
            return False
    return True


@njit(cache=True, nogil=True)
def intern_spans(cps: np.ndarray, starts: np.ndarray, ends: np.ndarray, k: int,
                 ids: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    """ids[t] = 1 + rank of span t's text among distinct texts in first-occurrence order (exact:
    equal hashes are compared char by char). Returns (repeats, characters in repeats): every span
    equal to an earlier one is a repeat (as quality._find_duplicates)."""
    cap = 16
    while cap < 2 * k:
        cap *= 2
    mask = np.uint64(cap - 1)
    first = np.full(cap, -1, np.int64)
    hashes = np.empty(cap, np.uint64)
    nid = 0
    dup = 0
    dup_chars = 0
    for t in range(k):
        a = starts[t]
        b = ends[t]
        h = _span_hash(cps, a, b)
        s = (h ^ (h >> np.uint64(31))) & mask
        while True:
            u = first[s]
            if u < 0:
                first[s] = t
                hashes[s] = h
                nid += 1
                ids[t] = nid
                break
            if hashes[s] == h and _span_eq(cps, starts[u], ends[u], a, b):
                ids[t] = ids[u]
                dup += 1
                dup_chars += b - a
                break
            s = (s + np.uint64(1)) & mask
    return dup, dup_chars


@njit(cache=True, nogil=True)
def split_newline_runs(cps: np.ndarray, a: int, b: int, min_run: int, ls: np.ndarray,
                       le: np.ndarray) -> int:  # pragma: no cover - compiled
    """Spans of cps[a:b] between runs of >= `min_run` newlines (Python's re.split of `\\n{min_run,}`):
    starts/ends into ls/le; returns how many (always >= 1)."""
    k = 0
    start = a
    i = a
    while i < b:
        if cps[i] == 10:
            j = i + 1
            while j < b and cps[j] == 10:
                j += 1
            if j - i >= min_run:
                ls[k] = start
                le[k] = i
                k += 1
                start = j
            i = j
        else:
            i += 1
    ls[k] = start
    le[k] = b
    return k + 1


@njit(cache=True, nogil=True)
def _contains(buf: np.ndarray, m: int, needles: np.ndarray, a: int, b: int) -> bool:  # pragma: no cover - compiled
    k = b - a
    for i in range(m - k + 1):
        j = 0
        while j < k and buf[i + j] == needles[a + j]:
            j += 1
        if j == k:
            return True
    return False


@njit(cache=True, nogil=True)
def _is_literal(cps: np.ndarray, i: int, end: int, lit: np.ndarray) -> bool:  # pragma: no cover - compiled
    if end - i < len(lit):
        return False
    for j in range(len(lit)):  # noqa: SIM110 - a loop numba compiles to a plain loop
        if cps[i + j] != lit[j]:
            return False
    return True


_EDIT = np.array([ord(c) for c in "[edit]"], np.int32)
_CITATION_NEEDED = np.array([ord(c) for c in "[citation needed]"], np.int32)


@njit(cache=True, nogil=True)
def _c4(cps: np.ndarray, ls: np.ndarray, le: np.ndarray, nl: int, flags: np.ndarray, lower: np.ndarray,
        needles: np.ndarray, noff: np.ndarray, params: np.ndarray, buf: np.ndarray,
        low: np.ndarray) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """quality._c4 in compat mode over the splitlines spans: (sentences, kept lines, first doc rule).
    needles (lowercase): 0 "lorem ipsum", 1 "javascript", 2.. the policy phrases."""
    max_word_len = params[0]
    min_words = params[1]
    sentences = 0
    kept = 0
    doc = 0
    for li in range(nl):
        a = ls[li]
        b = le[li]
        while a < b and flags[cps[a]] & C_SPACE:      # strip()
            a += 1
        while b > a and flags[cps[b - 1]] & C_SPACE:
            b -= 1
        n_words = 0                                    # split(), before citations are removed
        longest = 0
        i = a
        while i < b:
            if flags[cps[i]] & C_SPACE:
                i += 1
                continue
            j = i + 1
            while j < b and not flags[cps[j]] & C_SPACE:
                j += 1
            n_words += 1
            longest = max(longest, j - i)
            i = j
        m = 0                                          # the line, citations removed (_CITATION.sub)
        i = a
        while i < b:
            c = cps[i]
            if c == 91 and params[6]:
                j = i + 1
                while j < b and flags[cps[j]] & C_DIGIT:
                    j += 1
                if j < b and cps[j] == 93:
                    i = j + 1
                    continue
                if _is_literal(cps, i, b, _EDIT):
                    i += len(_EDIT)
                    continue
                if _is_literal(cps, i, b, _CITATION_NEEDED):
                    i += len(_CITATION_NEEDED)
                    continue
            buf[m] = c
            m += 1
            i += 1
        if m == 0:
            continue
        last = buf[m - 1]
        if not (last == 46 or last == 63 or last == 33 or last == 34 or last == 39):
            continue
        if m >= 3 and buf[m - 2] == 46 and buf[m - 3] == 46 and last == 46:
            continue
        if m > max_word_len and longest > max_word_len:
            continue
        if n_words < min_words:
            continue
        lm = 0                                          # line.lower(): one char each but U+0130
        for i in range(m):
            c = buf[i]
            if c == 0x130:
                low[lm] = 105
                low[lm + 1] = 0x307
                lm += 2
            else:
                low[lm] = lower[c]
                lm += 1
        if params[2] and _contains(low, lm, needles, noff[0], noff[1]) and doc == 0:
            doc = C4_LOREM
        if params[3] and _contains(low, lm, needles, noff[1], noff[2]):
            continue
        if params[4] and doc == 0:
            for i in range(m):
                if buf[i] == 123:
                    doc = C4_CURLY
                    break
        if params[5]:
            policy = False
            for p in range(2, len(noff) - 1):
                if _contains(low, lm, needles, noff[p], noff[p + 1]):
                    policy = True
                    break
            if policy:
                continue
        n_sent = 1                                      # 1 + matches of (?<=[.!?])\s+
        for i in range(1, m):
            p = buf[i - 1]
            if flags[buf[i]] & C_SPACE and (p == 46 or p == 33 or p == 63):
                n_sent += 1
        sentences += n_sent
        kept += 1
    return sentences, kept, doc


@njit(cache=True, nogil=True)
def compat_signals(data: np.ndarray, offsets: np.ndarray, valid: np.ndarray, flags: np.ndarray,
                   lower: np.ndarray, needles: np.ndarray, noff: np.ndarray, stops: np.ndarray,
                   soff: np.ndarray, top_k: np.ndarray, dup_k: np.ndarray,
                   params: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    """Every count behind QualityStage's datatrove_compat signals, per document of an Arrow string
    array (data: its UTF-8 bytes, offsets: n + 1 byte offsets): one row of S_* columns each.
    params: max_word_len, min_words_per_line, lorem, javascript, curly, policy, citations (C4),
    short_line_length (FineWeb)."""
    n_docs = len(offsets) - 1
    out = np.zeros((n_docs, N_FIXED + len(top_k) + len(dup_k)), np.float64)
    longest = 1
    for d in range(n_docs):
        longest = max(longest, offsets[d + 1] - offsets[d])
    cps = np.empty(longest, np.int32)
    ts = np.empty(longest, np.int64)
    te = np.empty(longest, np.int64)
    ls = np.empty(longest + 1, np.int64)
    le = np.empty(longest + 1, np.int64)
    ids = np.empty(longest + 1, np.uint64)     # spans of \n-split pieces: up to n + 1
    wlen = np.empty(longest, np.int64)
    buf = np.empty(longest, np.int32)
    low = np.empty(2 * longest, np.int32)
    seen = np.zeros(max(len(soff) - 1, 1), np.bool_)
    short = params[7]
    for d in range(n_docs):
        if not valid[d]:
            continue
        row = out[d]
        n = decode_utf8(data, offsets[d], offsets[d + 1], cps)
        row[S_LEN] = n
        # words: tokens, datatrove's symbol tokens (only PUNCTUATION), tokens with a letter
        k = tokenize(cps, n, flags, ts, te)
        row[S_N_TOK] = k
        tok_chars = 0
        n_sym = 0
        sym_chars = 0
        alpha = 0
        for t in range(k):
            a = ts[t]
            b = te[t]
            wlen[t] = b - a
            tok_chars += b - a
            all_punct = True
            has_alpha = False
            for i in range(a, b):
                f = flags[cps[i]]
                if not f & C_PUNCT:
                    all_punct = False
                if f & C_WORD and not f & C_DIGIT and cps[i] != 95:
                    has_alpha = True
            if all_punct:
                n_sym += 1
                sym_chars += b - a
            if has_alpha:
                alpha += 1
        row[S_TOK_CHARS] = tok_chars
        row[S_N_SYM] = n_sym
        row[S_SYM_CHARS] = sym_chars
        row[S_ALPHA] = alpha
        # stop words present (case-sensitive, distinct)
        seen[:] = False
        n_stop = 0
        for t in range(k):
            for s in range(len(soff) - 1):
                if not seen[s] and te[t] - ts[t] == soff[s + 1] - soff[s]:
                    same = True
                    for i in range(te[t] - ts[t]):
                        if cps[ts[t] + i] != stops[soff[s] + i]:
                            same = False
                            break
                    if same:
                        seen[s] = True
                        n_stop += 1
        row[S_STOP] = n_stop
        # '#', '...' (non-overlapping) and '…' in the text, and newlines
        hashes = 0
        ell = 0
        newlines = 0
        dots = 0
        for i in range(n):
            c = cps[i]
            if c == 46:
                dots += 1
                continue
            ell += dots // 3
            dots = 0
            if c == 35:
                hashes += 1
            elif c == 0x2026:
                ell += 1
            elif c == 10:
                newlines += 1
        ell += dots // 3
        row[S_HASH] = hashes
        row[S_ELLIPSIS] = ell
        row[S_NEWLINES] = newlines
        # str.splitlines() lines: bullets, trailing ellipses, then C4 over them
        nl = 0
        a = 0
        i = 0
        while i < n:
            c = cps[i]
            if flags[c] & C_BREAK:
                ls[nl] = a
                le[nl] = i
                nl += 1
                if c == 13 and i + 1 < n and cps[i + 1] == 10:
                    i += 1
                a = i + 1
            i += 1
        if a < n:
            ls[nl] = a
            le[nl] = n
            nl += 1
        row[S_N_LINES] = nl
        bullets = 0
        ell_lines = 0
        for li in range(nl):
            a = ls[li]
            b = le[li]
            while a < b and flags[cps[a]] & C_SPACE:
                a += 1
            while b > a and flags[cps[b - 1]] & C_SPACE:
                b -= 1
            if b > a:
                if cps[a] == 0x2022 or cps[a] == 45:
                    bullets += 1
                if cps[b - 1] == 0x2026 or (b - a >= 3 and cps[b - 1] == 46 and cps[b - 2] == 46
                                            and cps[b - 3] == 46):
                    ell_lines += 1
        row[S_BULLET] = bullets
        row[S_ELL_LINES] = ell_lines
        sent, kept, doc = _c4(cps, ls, le, nl, flags, lower, needles, noff, params, buf, low)
        row[S_C4_SENT] = sent
        row[S_C4_KEPT] = kept
        row[S_C4_DOC] = doc
        # repetition: paragraphs of text.strip() split at \n{2,}
        a = 0
        b = n
        while a < b and flags[cps[a]] & C_SPACE:
            a += 1
        while b > a and flags[cps[b - 1]] & C_SPACE:
            b -= 1
        np_ = split_newline_runs(cps, a, b, 2, ls, le)
        row[S_N_PARAS] = np_
        dup, dup_chars = intern_spans(cps, ls, le, np_, ids)
        row[S_DUP_PARAS] = dup
        row[S_DUP_PARA_CHARS] = dup_chars
        # lines split at \n+
        nr = split_newline_runs(cps, 0, n, 1, ls, le)
        row[S_N_RLINES] = nr
        dup, dup_chars = intern_spans(cps, ls, le, nr, ids)
        row[S_DUP_RLINES] = dup
        row[S_DUP_RLINE_CHARS] = dup_chars
        # FineWeb: non-blank lines of text.split("\n")
        nf = 0
        start = 0
        for i in range(n + 1):
            if i == n or cps[i] == 10:
                blank = True
                for j in range(start, i):
                    if not flags[cps[j]] & C_SPACE:
                        blank = False
                        break
                if not blank:
                    ls[nf] = start
                    le[nf] = i
                    nf += 1
                start = i + 1
        punct = 0
        n_short = 0
        for li in range(nf):
            if flags[cps[le[li] - 1]] & C_TERM:
                punct += 1
            if le[li] - ls[li] <= short:
                n_short += 1
        row[S_FW_LINES] = nf
        row[S_FW_PUNCT] = punct
        row[S_FW_SHORT] = n_short
        row[S_FW_DUP_CHARS] = intern_spans(cps, ls, le, nf, ids)[1]
        # n-grams over token ids (last: ids is reused above)
        if k >= 2:
            intern_spans(cps, ts, te, k, ids)
            top, dupg = ngram_chars(ids[:k], wlen[:k], top_k, dup_k, True)
            for j in range(len(top_k)):
                row[N_FIXED + j] = top[j]
            for j in range(len(dup_k)):
                row[N_FIXED + len(top_k) + j] = dupg[j]
    return out


@njit(cache=True, nogil=True)
def token_spans(data: np.ndarray, offsets: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """tokenize() over every document: (tokens per doc, starts, ends) in code points (for tests)."""
    n_docs = len(offsets) - 1
    counts = np.zeros(n_docs, np.int64)
    total = offsets[n_docs] - offsets[0]
    starts = np.empty(total, np.int64)
    ends = np.empty(total, np.int64)
    cps = np.empty(max(total, 1), np.int32)
    k = 0
    for d in range(n_docs):
        n = decode_utf8(data, offsets[d], offsets[d + 1], cps)
        c = tokenize(cps, n, flags, starts[k:], ends[k:])
        counts[d] = c
        k += c
    return counts, starts[:k], ends[:k]
