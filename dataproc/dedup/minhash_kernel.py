"""Compiled MinHash kernels (numba): shingling, shingle hashing and permutations fused per document.

Input is a batch of normalised documents as one UTF-8 byte buffer plus offsets (built by
`minhash.pack`). A kernel walks each document's bytes once, decodes code points, keeps the last n
words (or characters) in a ring buffer and emits the 32-bit hash of every shingle as it completes:

- poly64: polynomial hash of the shingle's code points mod 2^64 (words joined by one space), then
  fmix64, low 32 bits — the same function as `minhash.shingle_hash32`.
- sha1: SHA-1 of the shingle's normalised UTF-8 bytes, first 4 digest bytes little-endian —
  datasketch's `sha1_hash32`. Shingles of up to 55 bytes (one block; ~96% of real ones) are
  copied into one of 16 lanes and hashed 16 at a time by `sha1_x16`, a multi-buffer SHA-1 emitted
  as LLVM vector IR (AVX-512: ~10 ns a message); the order of hashes does not matter for a min.
  Longer shingles are assembled in a scratch buffer and hashed with OpenSSL's `SHA1_Transform`
  (called through ctypes); without libcrypto, `sha1_32` (our own compiled rounds) computes the same.

Signatures: shingle hashes are pre-mixed with fmix32 (datasketch's affine32 scheme) into a fixed
block; a full block is folded into the signature with `a*h + b mod 2^32` per permutation (inner
loop over the block: a vectorisable min-reduction). Memory per document is the block, whatever its
length. All arithmetic is uint64 on purpose: numba types uint32*uint32 as int64. The per-document
scan runs without NRT: reference counting of the helpers' array arguments cost more than hashing.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_U = np.uint64
M32 = _U(0xFFFFFFFF)
_P = _U(0x100000001B3)
_SP = _U(32)
_C1 = _U(0xFF51AFD7ED558CCD)
_C2 = _U(0xC4CEB9FE1A85EC53)
_C3 = _U(0x85EBCA6B)
_C4 = _U(0xC2B2AE35)
_K0, _K1, _K2, _K3 = _U(0x5A827999), _U(0x6ED9EBA1), _U(0x8F1BBCDC), _U(0xCA62C1D6)
BLOCK = 2048                       # shingle hashes folded into the signature at a time
LANES = 16                         # messages per multi-buffer SHA-1 call (one AVX-512 vector)
_ONE_BLOCK = 55                    # longest message that pads into one 64-byte block


@njit(cache=True, inline="always")
def _fmix64(h):
    h = h ^ (h >> _U(33))
    h = h * _C1
    h = h ^ (h >> _U(33))
    h = h * _C2
    return h ^ (h >> _U(33))


@njit(cache=True, inline="always")
def _fmix32(h):
    h = h ^ (h >> _U(16))
    h = (h * _C3) & M32
    h = h ^ (h >> _U(13))
    h = (h * _C4) & M32
    return h ^ (h >> _U(16))


@njit(cache=True, inline="always")
def _rotl(x, k):
    return ((x << _U(k)) | (x >> _U(32 - k))) & M32


@njit(cache=True, inline="always")
def _compress(w, h0, h1, h2, h3, h4):
    """One SHA-1 block: w[0:16] hold the big-endian message words; w is extended in place."""
    for t in range(16, 80):
        w[t] = _rotl(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1)
    a, b, c, d, f = h0, h1, h2, h3, h4
    for t in range(0, 20):
        tmp = (_rotl(a, 5) + ((b & c) | ((b ^ M32) & d)) + f + _K0 + w[t]) & M32
        f, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(20, 40):
        tmp = (_rotl(a, 5) + (b ^ c ^ d) + f + _K1 + w[t]) & M32
        f, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(40, 60):
        tmp = (_rotl(a, 5) + ((b & c) | (b & d) | (c & d)) + f + _K2 + w[t]) & M32
        f, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    for t in range(60, 80):
        tmp = (_rotl(a, 5) + (b ^ c ^ d) + f + _K3 + w[t]) & M32
        f, d, c, b, a = d, c, _rotl(b, 30), a, tmp
    return (h0 + a) & M32, (h1 + b) & M32, (h2 + c) & M32, (h3 + d) & M32, (h4 + f) & M32


@njit(cache=True)
def sha1_32(buf, s, e, w):
    """datasketch's sha1_hash32 of buf[s:e]: SHA-1, first 4 digest bytes read little-endian.
    `w` is a uint64[80] scratch array (the message schedule)."""
    h0, h1, h2, h3, h4 = _U(0x67452301), _U(0xEFCDAB89), _U(0x98BADCFE), _U(0x10325476), _U(0xC3D2E1F0)
    length = e - s
    pos = s
    while e - pos >= 64:                                # full blocks
        for t in range(16):
            q = pos + 4 * t
            w[t] = (_U(buf[q]) << _U(24)) | (_U(buf[q + 1]) << _U(16)) | (_U(buf[q + 2]) << _U(8)) | _U(buf[q + 3])
        h0, h1, h2, h3, h4 = _compress(w, h0, h1, h2, h3, h4)
        pos += 64
    rem = e - pos                                       # < 64 bytes + 0x80 + length: 1 or 2 blocks
    for t in range(16):
        w[t] = _U(0)
    for k in range(rem):
        w[k >> 2] |= _U(buf[pos + k]) << _U(24 - 8 * (k & 3))
    w[rem >> 2] |= _U(0x80) << _U(24 - 8 * (rem & 3))
    if rem >= 56:
        h0, h1, h2, h3, h4 = _compress(w, h0, h1, h2, h3, h4)
        for t in range(16):
            w[t] = _U(0)
    bits = _U(length) * _U(8)
    w[14] = bits >> _U(32)
    w[15] = bits & M32
    h0, h1, h2, h3, h4 = _compress(w, h0, h1, h2, h3, h4)
    # digest[:4] is h0 big-endian; read little-endian that is the byte swap of h0
    return (((h0 & _U(0xFF)) << _U(24)) | (((h0 >> _U(8)) & _U(0xFF)) << _U(16))
            | (((h0 >> _U(16)) & _U(0xFF)) << _U(8)) | (h0 >> _U(24)))


@njit(cache=True)
def _sha1_sb(sb, m, w, tf, ctx):
    """sha1_hash32 of sb[:m]. With OpenSSL's block function (`tf`, state in `ctx`; SHA-NI where the
    CPU has it, ~2x our compiled rounds) the message is padded in place: sb has 72 spare bytes.
    An empty `ctx` means no OpenSSL: our own rounds."""
    if ctx.shape[0] == 0:
        return sha1_32(sb, 0, m, w)
    end = ((m + 8) // 64 + 1) * 64
    sb[m] = 0x80
    for x in range(m + 1, end - 8):
        sb[x] = 0
    bits = m * 8
    for k in range(8):
        sb[end - 1 - k] = (bits >> (8 * k)) & 0xFF
    ctx[0], ctx[1], ctx[2], ctx[3], ctx[4] = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0
    p, c = sb.ctypes.data, ctx.ctypes.data
    for off in range(0, end, 64):
        tf(c, p + off)
    h0 = _U(ctx[0])
    return (((h0 & _U(0xFF)) << _U(24)) | (((h0 >> _U(8)) & _U(0xFF)) << _U(16))
            | (((h0 >> _U(16)) & _U(0xFF)) << _U(8)) | (h0 >> _U(24)))


@intrinsic
def sha1_x16(typingctx, mw, out):
    """Multi-buffer SHA-1 of LANES one-block messages: mw is uint32[16*LANES] with mw[LANES*t + l]
    = word t of lane l's padded block as read little-endian from its bytes; out[l] = sha1_hash32 of lane l (first 4 digest
    bytes, little-endian). Emitted as straight-line LLVM IR on <LANES x i32> vectors: numba loops
    with the lane index innermost did not vectorise well (~150 ns/message); this is ~12 ns with
    AVX-512 (rotates -> vprold, the round functions -> vpternlogd)."""
    sig = types.void(mw, out)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        vt = ir.VectorType(i32, LANES)
        wp = builder.bitcast(context.make_array(signature.args[0])(context, builder, args[0]).data,
                             vt.as_pointer())
        op = builder.bitcast(context.make_array(signature.args[1])(context, builder, args[1]).data,
                             vt.as_pointer())
        mod = builder.module
        fshl = cgutils.get_or_insert_function(mod, ir.FunctionType(vt, [vt, vt, vt]), f"llvm.fshl.v{LANES}i32")
        bswap = cgutils.get_or_insert_function(mod, ir.FunctionType(vt, [vt]), f"llvm.bswap.v{LANES}i32")

        def c(v):
            return ir.Constant(vt, [ir.Constant(i32, v)] * LANES)

        def rol(x, k):
            return builder.call(fshl, [x, x, c(k)])

        w = []
        for t in range(16):
            ld = builder.load(builder.gep(wp, [ir.Constant(i32, t)]))
            ld.align = 4
            w.append(builder.call(bswap, [ld]))
        for t in range(16, 80):
            w.append(rol(builder.xor(builder.xor(w[t - 3], w[t - 8]), builder.xor(w[t - 14], w[t - 16])), 1))
        a, b, cc, d, e = c(0x67452301), c(0xEFCDAB89), c(0x98BADCFE), c(0x10325476), c(0xC3D2E1F0)
        k = (0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xCA62C1D6)
        for t in range(80):
            if t < 20:
                f = builder.xor(d, builder.and_(b, builder.xor(cc, d)))              # ch
            elif 40 <= t < 60:
                f = builder.or_(builder.and_(b, cc), builder.and_(d, builder.or_(b, cc)))   # maj
            else:
                f = builder.xor(builder.xor(b, cc), d)                               # parity
            tmp = builder.add(builder.add(rol(a, 5), f), builder.add(builder.add(e, c(k[t // 20])), w[t]))
            e, d, cc, b, a = d, cc, rol(b, 30), a, tmp
        st = builder.store(builder.call(bswap, [builder.add(a, c(0x67452301))]), op)   # h0, read LE
        st.align = 4
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def _decode(buf, i):
    """(code point, byte length) of the UTF-8 sequence at buf[i] (input comes from str.encode)."""
    b0 = _U(buf[i])
    if b0 < _U(0x80):
        return b0, 1
    if b0 < _U(0xE0):
        return ((b0 & _U(0x1F)) << _U(6)) | (_U(buf[i + 1]) & _U(0x3F)), 2
    if b0 < _U(0xF0):
        return (((b0 & _U(0x0F)) << _U(12)) | ((_U(buf[i + 1]) & _U(0x3F)) << _U(6))
                | (_U(buf[i + 2]) & _U(0x3F))), 3
    return (((b0 & _U(0x07)) << _U(18)) | ((_U(buf[i + 1]) & _U(0x3F)) << _U(12))
            | ((_U(buf[i + 2]) & _U(0x3F)) << _U(6)) | (_U(buf[i + 3]) & _U(0x3F))), 4


@njit(cache=True, _nrt=False)
def _fold(blk, nb, a, b, sig):
    # uint32 arrays, truncated products: LLVM narrows this to 32-bit vector multiplies and mins
    for p in range(a.shape[0]):
        ap, bp = a[p], b[p]
        m = sig[p]
        for t in range(nb):
            v = np.uint32(ap * blk[t] + bp)
            m = min(m, v)
        sig[p] = m


@njit(cache=True, inline="always")
def _emit(hv, out, nout, blk, nb, a, b, sig):
    """Store one shingle hash: into `out` (hash mode) or the pending block (signature mode).
    Returns the new (nout, nb)."""
    if out.shape[0] > 0:
        out[nout] = hv
        return nout + 1, nb
    blk[nb] = np.uint32(_fmix32(hv))
    nb += 1
    if nb == blk.shape[0]:
        _fold(blk, nb, a, b, sig)
        nb = 0
    return nout + 1, nb


@njit(cache=True, inline="always")
def _shingle_hash(sl0, k, n, words, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w, tf, ctx):
    """Hash of the k units held in the ring from slot sl0 on (words joined by one space). Slots
    advance by a compare, not `%`: an integer division per unit cost more than the hashing."""
    if sha1:                                           # the shingle's normalised UTF-8 bytes
        m = 0
        sl = sl0
        for q in range(k):
            if words and q:
                sb[m] = 32
                m += 1
            for x in range(ring_s[sl], ring_e[sl]):
                sb[m] = buf[x]
                m += 1
            sl = sl + 1 if sl + 1 < n else 0
        return _sha1_sb(sb, m, w, tf, ctx)
    h = ring_h[sl0]
    sl = sl0
    for _ in range(1, k):
        sl = sl + 1 if sl + 1 < n else 0
        if words:
            h = (h * _P + _SP) * ring_p[sl] + ring_h[sl]
        else:
            h = h * _P + ring_h[sl]
    return _fmix64(h) & M32


@njit(cache=True)
def sha1_lanes(mw, out):
    """`sha1_x16` callable from Python (tests)."""
    sha1_x16(mw, out)


@intrinsic
def _ld8(typingctx, arr, i):
    """arr[i:i+8] as a little-endian uint64 (an unaligned load; numba has none)."""
    sig = types.uint64(arr, i)

    def codegen(context, builder, signature, args):
        p = context.make_array(signature.args[0])(context, builder, args[0]).data
        v = builder.load(builder.bitcast(builder.gep(p, [args[1]]), ir.IntType(64).as_pointer()))
        v.align = 1
        return v
    return sig, codegen


@intrinsic
def _st8(typingctx, arr, i, v):
    """arr[i:i+8] = the 8 little-endian bytes of uint64 v (an unaligned store)."""
    sig = types.void(arr, i, v)

    def codegen(context, builder, signature, args):
        p = context.make_array(signature.args[0])(context, builder, args[0]).data
        st = builder.store(context.cast(builder, args[2], signature.args[2], types.uint64),
                           builder.bitcast(builder.gep(p, [args[1]]), ir.IntType(64).as_pointer()))
        st.align = 1
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def _lane_put(sl0, k, n, words, buf, ring_s, ring_e, mb, lane):
    """Write the shingle of the k ring units from slot sl0 (words joined by one space), padded to
    one SHA-1 block, into lane `lane`'s 64 bytes of mb. Returns False, writing nothing, when it
    needs more than one block (> 55 bytes): those go to the scalar path.
    Units are copied 8 bytes at a time (byte loops cost more than the hashing): a copy may run up
    to 7 bytes past its unit (buf has 16 spare bytes); the next unit or the 0x80 word overwrites it,
    and no store reaches past byte 62 of the lane (m <= 55)."""
    m = k - 1 if words else 0
    sl = sl0
    for _ in range(k):
        m += ring_e[sl] - ring_s[sl]
        sl = sl + 1 if sl + 1 < n else 0
    if m > _ONE_BLOCK:
        return False
    base = lane * 64
    for x in range(8):
        _st8(mb, base + 8 * x, _U(0))
    j = base
    sl = sl0
    for q in range(k):
        if words and q:
            mb[j] = 32
            j += 1
        s0, ln = ring_s[sl], ring_e[sl] - ring_s[sl]
        c = 0
        while c < ln:
            _st8(mb, j + c, _ld8(buf, s0 + c))
            c += 8
        j += ln
        sl = sl + 1 if sl + 1 < n else 0
    _st8(mb, j, _U(0x80))                               # 0x80, then zeros over any overrun
    mb[base + 62] = (m >> 5) & 0xFF                     # bit length m*8, big-endian (< 2^16)
    mb[base + 63] = (m << 3) & 0xFF
    return True


@njit(cache=True, _nrt=False)
def _flush(nl, mb32, mw, hl, out, nout, blk, nb, a, b, sig):
    """Hash the nl pending lanes (the others hold stale messages; their hashes are dropped) and
    emit them. Returns the new (nout, nb). Not inlined: one call per LANES shingles, and `_scan`
    stays small enough for LLVM to inline into `sign_batch` (hash mode constant there)."""
    for t in range(16):                                 # lane-major blocks -> word-major vectors
        for q in range(LANES):
            mw[LANES * t + q] = mb32[16 * q + t]
    sha1_x16(mw, hl)
    for q in range(nl):
        nout, nb = _emit(_U(hl[q]), out, nout, blk, nb, a, b, sig)
    return nout, nb


@njit(cache=True, inline="always")
def _shingle(sl0, k, n, words, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w, tf, ctx, mb, mb32, mw, hl,
             nl, out, nout, blk, nb, a, b, sig):
    """A completed shingle: sha1 mode queues it in a free lane (hashed LANES at a time; the order
    of hashes does not matter for a min or a sorted set), or hashes it at once when it is longer
    than one block; poly64 hashes it at once. Returns the new (nl, nout, nb)."""
    if sha1 and _lane_put(sl0, k, n, words, buf, ring_s, ring_e, mb, nl):
        nl += 1
        if nl == LANES:
            nout, nb = _flush(nl, mb32, mw, hl, out, nout, blk, nb, a, b, sig)
            nl = 0
        return nl, nout, nb
    hv = _shingle_hash(sl0, k, n, words, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w, tf, ctx)
    nout, nb = _emit(hv, out, nout, blk, nb, a, b, sig)
    return nl, nout, nb


@njit(cache=True, _nrt=False)
def _scan(buf, s, e, char_mode, n, sha1, isw, out, blk, a, b, sig, w, sb, tf, ctx, mb, mb32, mw, hl,
          ring_h, ring_p, ring_s, ring_e):
    """Shingle hashes of document buf[s:e] (lower-cased UTF-8); returns how many were emitted.
    Normalisation happens here: code points with isw[cp] == 0 (Python's `[\\W_]`) separate words
    (word mode) or are dropped (char mode). Fewer than n units make one shingle of all.
    mb (bytes; mb32 the same memory as words)/mw/hl: the multi-buffer SHA-1 lanes, their word-major
    transpose and their hashes (sha1 mode). ring_*: the last n units (see `_rings`).
    Compiled without NRT (no allocation here): array arguments of the inlined helpers otherwise
    cost an atomic incref/decref pair each, per shingle (~50 ns a shingle in sha1 mode)."""
    words = not char_mode
    nout, nb, cnt, slot, nl = 0, 0, 0, 0, 0      # slot: ring position of the next unit; nl: lanes used
    cur_h, cur_p, cur_s = _U(0), _U(1), s
    in_word = False
    i = s
    while i <= e:
        ln = 1
        if i < e:
            cp, ln = _decode(buf, i)
            if isw[cp]:
                if words:
                    if not in_word:
                        in_word = True
                        cur_h, cur_p, cur_s = _U(0), _U(1), i
                    cur_h = cur_h * _P + cp
                    cur_p = cur_p * _P
                    i += ln
                    continue
                ring_h[slot], ring_s[slot], ring_e[slot] = cp, i, i + ln
                cnt += 1
                slot = slot + 1 if slot + 1 < n else 0
                if cnt >= n:                           # the oldest unit sits at the next slot
                    nl, nout, nb = _shingle(slot, n, n, False, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w,
                                            tf, ctx, mb, mb32, mw, hl, nl, out, nout, blk, nb, a, b, sig)
                i += ln
                continue
        if in_word:                                    # a separator (or the end) closes a word
            in_word = False
            ring_h[slot], ring_p[slot], ring_s[slot], ring_e[slot] = cur_h, cur_p, cur_s, i
            cnt += 1
            slot = slot + 1 if slot + 1 < n else 0
            if cnt >= n:
                nl, nout, nb = _shingle(slot, n, n, True, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w,
                                        tf, ctx, mb, mb32, mw, hl, nl, out, nout, blk, nb, a, b, sig)
        i += ln
    if 0 < cnt < n:                                    # short document: one shingle of all
        nl, nout, nb = _shingle(0, cnt, n, words, sha1, buf, ring_h, ring_p, ring_s, ring_e, sb, w,
                                tf, ctx, mb, mb32, mw, hl, nl, out, nout, blk, nb, a, b, sig)
    if nl:
        nout, nb = _flush(nl, mb32, mw, hl, out, nout, blk, nb, a, b, sig)
    if out.shape[0] == 0 and nb:
        _fold(blk, nb, a, b, sig)
    return nout


@njit(cache=True)
def _max_len(offs):
    m = 0
    for d in range(offs.shape[0] - 1):
        m = max(m, offs[d + 1] - offs[d])
    return m


@njit(cache=True)
def _rings(n):
    """Ring buffers of the last n units: word hash / code point, P^(word length), byte start, end."""
    return np.zeros(n, np.uint64), np.zeros(n, np.uint64), np.zeros(n, np.int64), np.zeros(n, np.int64)


@njit(cache=True)
def _padded(buf):
    """buf + 16 zero bytes: `_lane_put` copies in 16-byte chunks that may read past a unit."""
    out = np.zeros(buf.shape[0] + 16, np.uint8)
    out[:buf.shape[0]] = buf
    return out


@njit(cache=True)
def _scan_buffers(offs, sha1, n_word, n_char):  # pragma: no cover - compiled
    """The scratch `_scan` needs, allocated once per batch: SHA-1 schedule, shingle bytes (a shingle
    is never longer than its document), the 16-lane blocks and the shingle rings."""
    w = np.empty(80, np.uint64)
    sb = np.empty(_max_len(offs) + 73 if sha1 else 1, np.uint8)
    mw = np.zeros(16 * LANES, np.uint32)
    mb32 = np.zeros(16 * LANES, np.uint32)             # lane l's padded block: bytes 64*l .. 64*l+63
    mb = mb32.view(np.uint8)
    hl = np.empty(LANES, np.uint32)
    rh, rp, rs, re = _rings(max(n_word, n_char))
    return w, sb, mw, mb32, mb, hl, rh, rp, rs, re


@njit(cache=True)
def sign_batch(buf, offs, char_mode, n_word, n_char, sha1, isw, a, b, tf, ctx):
    """(n_docs, num_perm) uint32 signatures (empty document: all 0xFFFFFFFF) and has_shingles."""
    nd, npm = offs.shape[0] - 1, a.shape[0]
    buf = _padded(buf)
    sigs = np.empty((nd, npm), np.uint32)
    has = np.zeros(nd, np.bool_)
    blk = np.empty(BLOCK, np.uint32)
    sig = np.empty(npm, np.uint32)
    none = np.empty(0, np.uint64)
    w, sb, mw, mb32, mb, hl, rh, rp, rs, re = _scan_buffers(offs, sha1, n_word, n_char)
    for d in range(nd):
        sig[:] = np.uint32(0xFFFFFFFF)
        cm = char_mode[d] != 0
        n = n_char if cm else n_word
        # constant hash mode per call site: LLVM then drops the other mode's code from the hot
        # loop (a runtime flag there made poly64 2x slower)
        if sha1:
            k = _scan(buf, offs[d], offs[d + 1], cm, n, True, isw, none, blk, a, b, sig, w, sb, tf, ctx, mb, mb32, mw, hl,
                      rh, rp, rs, re)
        else:
            k = _scan(buf, offs[d], offs[d + 1], cm, n, False, isw, none, blk, a, b, sig, w, sb, tf, ctx, mb, mb32, mw, hl,
                      rh, rp, rs, re)
        has[d] = k > 0
        sigs[d] = sig
    return sigs, has


@njit(cache=True)
def unique_hashes_batch(buf, offs, char_mode, n_word, n_char, sha1, isw, tf, ctx):
    """Sorted unique shingle hashes of every document, flattened, and their offsets."""
    nd = offs.shape[0] - 1
    buf = _padded(buf)
    out_offs = np.zeros(nd + 1, np.int64)
    parts = []
    blk = np.empty(1, np.uint32)
    sig = np.empty(1, np.uint32)
    w, sb, mw, mb32, mb, hl, rh, rp, rs, re = _scan_buffers(offs, sha1, n_word, n_char)
    for d in range(nd):
        cm = char_mode[d] != 0
        tmp = np.empty(offs[d + 1] - offs[d] + 1, np.uint64)  # <= one shingle per byte, + the short one
        k = _scan(buf, offs[d], offs[d + 1], cm, n_char if cm else n_word, sha1, isw, tmp, blk, blk, blk,
                  sig, w, sb, tf, ctx, mb, mb32, mw, hl, rh, rp, rs, re)
        u = np.unique(tmp[:k])
        parts.append(u)
        out_offs[d + 1] = out_offs[d] + u.shape[0]
    flat = np.empty(out_offs[nd], np.uint32)
    for d in range(nd):
        flat[out_offs[d]:out_offs[d + 1]] = parts[d].astype(np.uint32)
    return flat, out_offs


@njit(cache=True)
def jaccard_pairs(flat, offs, iu, iv):
    """Jaccard of the sorted unique hash sets flat[offs[i]:offs[i+1]] for each pair (iu, iv),
    by a merge count (0.0 when either set is empty)."""
    out = np.zeros(iu.shape[0], np.float64)
    for q in range(iu.shape[0]):
        a0, a1 = offs[iu[q]], offs[iu[q] + 1]
        b0, b1 = offs[iv[q]], offs[iv[q] + 1]
        na, nb = a1 - a0, b1 - b0
        if na == 0 or nb == 0:
            continue
        inter = 0
        i, j = a0, b0
        while i < a1 and j < b1:
            x, y = flat[i], flat[j]
            if x == y:
                inter += 1
                i += 1
                j += 1
            elif x < y:
                i += 1
            else:
                j += 1
        out[q] = inter / (na + nb - inter)
    return out
