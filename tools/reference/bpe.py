"""Byte-level BPE (GPT-2 style) for the hybridmoe reference: pre-split, training,
encoding by merge rank, and the GPT-2 byte-to-unicode table (spec 10, 12.1, 12.11).

Vocabulary layout (the same as the C trainer's): ids 0..255 are the single bytes
(token text = byte_to_unicode[b]), then one token per merge in merge order, then the
control tokens <|bos|> and <|eos|>.
"""

import unicodedata


def bytes_to_unicode():
    """GPT-2's reversible byte -> unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_ENC = bytes_to_unicode()
BYTE_DEC = {c: b for b, c in BYTE_ENC.items()}

# Unicode White_Space property
_WS = set("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | \
    set(chr(c) for c in range(0x2000, 0x200B))


def _is_ws(ch):
    return ch in _WS


def _is_l(ch):
    return unicodedata.category(ch)[0] == "L"


def _is_n(ch):
    return unicodedata.category(ch)[0] == "N"


_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


def presplit(text):
    """The GPT-2 pattern
    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
    implemented by hand (leftmost alternative that matches, each greedy)."""
    out = []
    i = 0
    n = len(text)
    while i < n:
        m = 0
        for c in _CONTRACTIONS:
            if text.startswith(c, i):
                m = len(c)
                break
        if not m:
            for cls in (_is_l, _is_n, lambda ch: not (_is_ws(ch) or _is_l(ch) or _is_n(ch))):
                j = i + 1 if text[i] == " " else i
                k = j
                while k < n and cls(text[k]):
                    k += 1
                if k > j:
                    m = k - i
                    break
        if not m and _is_ws(text[i]):
            k = i
            while k < n and _is_ws(text[k]):
                k += 1
            if k == n:
                m = k - i
            elif k - i >= 2:
                m = k - i - 1
            else:
                m = k - i
        assert m > 0
        out.append(text[i:i + m])
        i += m
    return out


def _piece_symbols(piece):
    return [BYTE_ENC[b] for b in piece.encode("utf-8")]


def train(text, n_merges, progress=None):
    """Learns n_merges merges from text. Ties broken by the smallest pair (in the
    order of the pair's bytes). Returns (tokens, token_type, merges)."""
    from collections import Counter, defaultdict
    words = Counter(presplit(text))
    wlist = [(_piece_symbols(w), c) for w, c in words.items()]
    sym_bytes = {BYTE_ENC[b]: bytes([b]) for b in range(256)}
    pairs = Counter()
    where = defaultdict(set)
    for wi, (s, c) in enumerate(wlist):
        for a, b in zip(s, s[1:]):
            pairs[(a, b)] += c
            where[(a, b)].add(wi)
    merges = []
    for it in range(n_merges):
        if not pairs:
            break
        best = None
        bestkey = None
        for p, c in pairs.items():
            if c <= 0:
                continue
            key = (-c, sym_bytes[p[0]], sym_bytes[p[1]])
            if bestkey is None or key < bestkey:
                best, bestkey = p, key
        if best is None:
            break
        a, b = best
        new = a + b
        sym_bytes[new] = sym_bytes[a] + sym_bytes[b]
        merges.append(best)
        for wi in list(where[best]):
            s, c = wlist[wi]
            for x, y in zip(s, s[1:]):
                pairs[(x, y)] -= c
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
            ns = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    ns.append(new)
                    i += 2
                else:
                    ns.append(s[i])
                    i += 1
            wlist[wi] = (ns, c)
            for x, y in zip(ns, ns[1:]):
                pairs[(x, y)] += c
                where[(x, y)].add(wi)
        where.pop(best, None)
        if progress:
            progress(it + 1, n_merges)
    tokens = [BYTE_ENC[b] for b in range(256)] + [a + b for a, b in merges] + \
        ["<|bos|>", "<|eos|>"]
    token_type = [1] * (len(tokens) - 2) + [3, 3]
    return tokens, token_type, ["%s %s" % m for m in merges]


class Tokenizer:
    def __init__(self, tokens, token_type, merges, bos=-1, eos=-1, add_bos=False):
        self.tokens = list(tokens)
        self.token_type = list(token_type)
        self.merges = list(merges)
        self.rank = {tuple(m.split(" ")): i for i, m in enumerate(self.merges)}
        self.vocab = {}
        for i, t in enumerate(self.tokens):
            if self.token_type[i] != 3:
                self.vocab.setdefault(t, i)
        self.bos = bos
        self.eos = eos
        self.add_bos = add_bos
        self.cache = {}

    @classmethod
    def from_meta(cls, meta):
        return cls(meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"],
                   meta.get("tokenizer.ggml.merges", []),
                   meta.get("tokenizer.ggml.bos_token_id", -1),
                   meta.get("tokenizer.ggml.eos_token_id", -1),
                   meta.get("tokenizer.ggml.add_bos_token", False))

    def meta(self):
        from gguf import Typed, T_ARR, T_STR, T_I32, T_U32, T_BOOL
        m = {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.tokens": Typed(T_ARR, self.tokens, T_STR),
            "tokenizer.ggml.token_type": Typed(T_ARR, self.token_type, T_I32),
            "tokenizer.ggml.merges": Typed(T_ARR, self.merges, T_STR),
        }
        if self.bos >= 0:
            m["tokenizer.ggml.bos_token_id"] = Typed(T_U32, self.bos)
        if self.eos >= 0:
            m["tokenizer.ggml.eos_token_id"] = Typed(T_U32, self.eos)
        m["tokenizer.ggml.add_bos_token"] = Typed(T_BOOL, bool(self.add_bos))
        return m

    def _bpe(self, piece):
        if piece in self.cache:
            return self.cache[piece]
        s = _piece_symbols(piece)
        while len(s) > 1:
            best = None
            for p in zip(s, s[1:]):
                r = self.rank.get(p)
                if r is not None and (best is None or r < best[0]):
                    best = (r, p)
            if best is None:
                break
            a, b = best[1]
            ns = []
            i = 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    ns.append(a + b)
                    i += 2
                else:
                    ns.append(s[i])
                    i += 1
            s = ns
        ids = [self.vocab[x] for x in s]
        self.cache[piece] = ids
        return ids

    def encode(self, text, add_bos=None):
        if add_bos is None:
            add_bos = self.add_bos
        ids = [self.bos] if (add_bos and self.bos >= 0) else []
        for p in presplit(text):
            ids.extend(self._bpe(p))
        return ids

    def token_bytes(self, i):
        """Decoded bytes of a token (spec 12.1)."""
        if i < 0 or i >= len(self.tokens) or self.token_type[i] == 3:
            return b""
        out = bytearray()
        for ch in self.tokens[i]:
            if ch in BYTE_DEC:
                out.append(BYTE_DEC[ch])
            else:
                out.extend(ch.encode("utf-8"))
        return bytes(out)

    def decode(self, ids):
        return b"".join(self.token_bytes(i) for i in ids)
