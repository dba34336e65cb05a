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
            cnt[s] += 1
            slot_of[i] = s
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
