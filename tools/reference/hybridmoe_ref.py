"""HybridMoE reference implementation (PyTorch, CPU), written from
../shared/spec/HYBRIDMOE.md independently of the C engine.

One module serves both as the reference (golden fixtures) and as the trainable model:
the forward pass is vectorised over a batch of whole sequences with masks.

    hp = HParams.from_meta(meta)               # spec section 1 (defaults applied)
    m = HybridMoE(hp, features, tok_bytes)     # tensors of section 2
    m.load_tensors(tensors)                    # from gguf.read()
    r = m.run(ids, n_prompt=len(ids), max_tokens=16)   # a request (sections 4-9, 12)

All arithmetic is float32 except where the spec asks for float64 (the estimator's
features, RoPE angles, c_req and the window policy).
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ARCH = "hybridmoe"


@dataclass
class HParams:
    n_vocab: int = 0
    context_length: int = 0
    embedding_length: int = 0
    block_count: int = 0
    layer_pattern: str = ""
    leading_dense_block_count: int = 0
    feed_forward_length: int = 0
    head_count: int = 0
    head_count_kv: int = 0           # 0 = h
    key_length: int = 0              # 0 = d / h
    rms_eps: float = 1e-5
    rope_freq_base: float = 10000.0
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    expert_count: int = 0
    expert_used_count: int = 0
    expert_shared_count: int = 0
    expert_feed_forward_length: int = 0
    expert_weights_norm: bool = True
    expert_weights_scale: float = 1.0
    router_k_min: int = 1
    router_threshold: float = 0.6
    router_threshold_gain: float = 0.4
    window_min: int = 512
    window_max: int = 2048
    window_complexity_gain: int = 1024
    window_long_context_start: int = 4096
    window_long_context_step: int = 1024
    window_long_context_penalty: int = 128
    phrase_span: int = 4
    max_phrases: int = 64
    max_sentences: int = 16
    max_sentence_length: int = 64
    cross_dim: int = 0               # 0 = d
    complexity_window: int = 64
    complexity_weights: list = field(default_factory=lambda: [0.4, 0.3, 0.3])

    # GGUF key (without the arch prefix) -> (field, type)
    KEYS = [
        ("context_length", "context_length", "u32"),
        ("embedding_length", "embedding_length", "u32"),
        ("block_count", "block_count", "u32"),
        ("layer_pattern", "layer_pattern", "str"),
        ("leading_dense_block_count", "leading_dense_block_count", "u32"),
        ("feed_forward_length", "feed_forward_length", "u32"),
        ("attention.head_count", "head_count", "u32"),
        ("attention.head_count_kv", "head_count_kv", "u32"),
        ("attention.key_length", "key_length", "u32"),
        ("attention.layer_norm_rms_epsilon", "rms_eps", "f32"),
        ("rope.freq_base", "rope_freq_base", "f32"),
        ("mla.q_lora_rank", "q_lora_rank", "u32"),
        ("mla.kv_lora_rank", "kv_lora_rank", "u32"),
        ("mla.qk_nope_head_dim", "qk_nope_head_dim", "u32"),
        ("mla.qk_rope_head_dim", "qk_rope_head_dim", "u32"),
        ("mla.v_head_dim", "v_head_dim", "u32"),
        ("expert_count", "expert_count", "u32"),
        ("expert_used_count", "expert_used_count", "u32"),
        ("expert_shared_count", "expert_shared_count", "u32"),
        ("expert_feed_forward_length", "expert_feed_forward_length", "u32"),
        ("expert_weights_norm", "expert_weights_norm", "bool"),
        ("expert_weights_scale", "expert_weights_scale", "f32"),
        ("router.k_min", "router_k_min", "u32"),
        ("router.threshold", "router_threshold", "f32"),
        ("router.threshold_gain", "router_threshold_gain", "f32"),
        ("window.min", "window_min", "u32"),
        ("window.max", "window_max", "u32"),
        ("window.complexity_gain", "window_complexity_gain", "u32"),
        ("window.long_context_start", "window_long_context_start", "u32"),
        ("window.long_context_step", "window_long_context_step", "u32"),
        ("window.long_context_penalty", "window_long_context_penalty", "u32"),
        ("multiscale.phrase_span", "phrase_span", "u32"),
        ("multiscale.max_phrases", "max_phrases", "u32"),
        ("multiscale.max_sentences", "max_sentences", "u32"),
        ("multiscale.max_sentence_length", "max_sentence_length", "u32"),
        ("multiscale.cross_dim", "cross_dim", "u32"),
        ("complexity.window", "complexity_window", "u32"),
        ("complexity.weights", "complexity_weights", "f32arr"),
    ]

    @property
    def d(self):
        return self.embedding_length

    @property
    def h(self):
        return self.head_count

    @property
    def h_kv(self):
        return self.head_count_kv or self.head_count

    @property
    def hd(self):
        return self.key_length or self.embedding_length // self.head_count

    @property
    def dx(self):
        return self.cross_dim or self.embedding_length

    def is_moe(self, l):
        return self.expert_count > 0 and l >= self.leading_dense_block_count

    @classmethod
    def from_meta(cls, meta, n_vocab):
        hp = cls()
        hp.n_vocab = n_vocab
        for key, fname, _t in cls.KEYS:
            k = ARCH + "." + key
            if k in meta:
                v = meta[k]
                if fname == "complexity_weights":
                    v = [float(x) for x in v]
                setattr(hp, fname, v)
        return hp

    def to_meta(self, write_defaults=False):
        from gguf import Typed, T_U32, T_F32, T_STR, T_BOOL, T_ARR
        d0 = HParams()
        m = {}
        req = {"context_length", "embedding_length", "block_count", "layer_pattern",
               "head_count"}
        for key, fname, t in self.KEYS:
            v = getattr(self, fname)
            if fname not in req and not write_defaults and v == getattr(d0, fname):
                continue
            k = ARCH + "." + key
            if t == "u32":
                m[k] = Typed(T_U32, int(v))
            elif t == "f32":
                m[k] = Typed(T_F32, float(v))
            elif t == "str":
                m[k] = Typed(T_STR, v)
            elif t == "bool":
                m[k] = Typed(T_BOOL, bool(v))
            else:
                m[k] = Typed(T_ARR, [float(x) for x in v], T_F32)
        return m


# Features (optional tensor groups), mirrors include/hm/model.h names.
FEATURES = ("xscale", "ctrl", "qk_norm", "sandwich", "adapt", "tied")


def tensor_specs(hp, feat):
    """Ordered (name, row-major shape) of every tensor the model stores."""
    d, V = hp.d, hp.n_vocab
    s = [("token_embd.weight", (V, d))]
    if feat.get("xscale"):
        dx = hp.dx
        s += [("xscale.q.weight", (dx, d)), ("xscale.k.weight", (dx, d)),
              ("xscale.v.weight", (dx, d)), ("xscale.o.weight", (d, dx)),
              ("xscale.scale_embd.weight", (2, dx))]
    if feat.get("ctrl"):
        s += [("ctrl.fc1.weight", (16, 4)), ("ctrl.fc1.bias", (16,)),
              ("ctrl.fc2.weight", (1, 16)), ("ctrl.fc2.bias", (1,))]
    h, hkv, hd = hp.h, hp.h_kv, hp.hd
    for l, T in enumerate(hp.layer_pattern):
        p = "blk.%d." % l
        s.append((p + "attn_norm.weight", (d,)))
        if feat.get("adapt"):
            s.append((p + "attn_norm_adapt.weight", (d,)))
        if feat.get("sandwich"):
            s.append((p + "post_attention_norm.weight", (d,)))
        if T in "GL":
            s += [(p + "attn_q.weight", (h * hd, d)), (p + "attn_k.weight", (hkv * hd, d)),
                  (p + "attn_v.weight", (hkv * hd, d))]
            if feat.get("qk_norm"):
                s += [(p + "attn_q_norm.weight", (hd,)), (p + "attn_k_norm.weight", (hd,))]
            s.append((p + "attn_output.weight", (d, h * hd)))
        else:
            dn, dr, dv, r = (hp.qk_nope_head_dim, hp.qk_rope_head_dim, hp.v_head_dim,
                             hp.kv_lora_rank)
            if hp.q_lora_rank > 0:
                rq = hp.q_lora_rank
                s += [(p + "attn_q_a.weight", (rq, d)), (p + "attn_q_a_norm.weight", (rq,)),
                      (p + "attn_q_b.weight", (h * (dn + dr), rq))]
            else:
                s.append((p + "attn_q.weight", (h * (dn + dr), d)))
            s += [(p + "attn_kv_a_mqa.weight", (r + dr, d)), (p + "attn_kv_a_norm.weight", (r,)),
                  (p + "attn_kv_b.weight", (h * (dn + dv), r)),
                  (p + "attn_output.weight", (d, h * dv))]
        s.append((p + "ffn_norm.weight", (d,)))
        if feat.get("adapt"):
            s.append((p + "ffn_norm_adapt.weight", (d,)))
        if feat.get("sandwich"):
            s.append((p + "post_ffw_norm.weight", (d,)))
        if hp.is_moe(l):
            E, fe, S = hp.expert_count, hp.expert_feed_forward_length, hp.expert_shared_count
            s += [(p + "ffn_gate_inp.weight", (E, d)),
                  (p + "ffn_gate_exps.weight", (E, fe, d)), (p + "ffn_up_exps.weight", (E, fe, d)),
                  (p + "ffn_down_exps.weight", (E, d, fe))]
            if S > 0:
                s += [(p + "ffn_gate_shexp.weight", (S * fe, d)),
                      (p + "ffn_up_shexp.weight", (S * fe, d)),
                      (p + "ffn_down_shexp.weight", (d, S * fe))]
        else:
            ff = hp.feed_forward_length
            s += [(p + "ffn_gate.weight", (ff, d)), (p + "ffn_up.weight", (ff, d)),
                  (p + "ffn_down.weight", (d, ff))]
    s.append(("output_norm.weight", (d,)))
    if not feat.get("tied"):
        s.append(("output.weight", (V, d)))
    return s


def features_from_tensors(names):
    names = set(names)
    return {
        "xscale": "xscale.q.weight" in names,
        "ctrl": "ctrl.fc1.weight" in names,
        "qk_norm": any(n.endswith("attn_q_norm.weight") for n in names),
        "sandwich": any(n.endswith("post_attention_norm.weight") for n in names),
        "adapt": any(n.endswith("attn_norm_adapt.weight") for n in names),
        "tied": "output.weight" not in names,
    }


def _key(name):
    return name.replace(".", "__")


def window_policy(hp, c_req, n_planned):
    """Section 8 with 12.4: int64 arithmetic, floor of c_req * w_gain in float64."""
    pen = 0
    if hp.window_long_context_step > 0:
        pen = max(0, (int(n_planned) - int(hp.window_long_context_start))
                  // int(hp.window_long_context_step)) * int(hp.window_long_context_penalty)
    w = int(hp.window_min) + int(math.floor(float(c_req) * float(hp.window_complexity_gain))) - pen
    return max(int(hp.window_min), min(int(hp.window_max), w))


SENT_TERM = b".!?\n"
PUNCT = b",;:()[]{}\"'"


class TokenInfo:
    """Per-vocabulary byte facts the estimator and the sentence splitter need."""

    def __init__(self, tok_bytes):
        V = len(tok_bytes)
        self.bytes = tok_bytes
        self.ends = np.array([any(c in SENT_TERM for c in b) for b in tok_bytes], dtype=bool)
        self.punct = np.array([any(c in PUNCT for c in b) for b in tok_bytes], dtype=bool)
        evs = []
        for b in tok_bytes:
            ev = [1 if c in b"([{" else -1 for c in b if c in b"([{)]}"]
            evs.append(ev)
        self.max_ev = max(1, max(len(e) for e in evs))
        self.ev = np.zeros((V, self.max_ev), dtype=np.int64)
        for i, e in enumerate(evs):
            self.ev[i, :len(e)] = e
        self.t_ends = torch.from_numpy(self.ends)
        self.t_punct = torch.from_numpy(self.punct)
        self.t_ev = torch.from_numpy(self.ev)

    def get_bytes(self, i):
        return self.bytes[i] if 0 <= i < len(self.bytes) else b""


def kv_elems(hp, feat, N, w):
    """KV-cache floats of one sequence of N positions with local window w (spec 8, 12.10):
    G layers N, L layers min(w, N), M layers the latent, plus the cross-scale cache. Returns
    (elements, elements of an all-G model of the same shape)."""
    e = 0
    for T in hp.layer_pattern:
        if T == "G":
            e += N * 2 * hp.h_kv * hp.hd
        elif T == "L":
            e += min(w, N) * 2 * hp.h_kv * hp.hd
        else:
            e += N * (hp.kv_lora_rank + hp.qk_rope_head_dim)
    if feat.get("xscale"):
        e += (min(hp.max_phrases, N // hp.phrase_span) + min(hp.max_sentences, N)) * 2 * hp.dx \
            + 2 * hp.d
    return e, hp.block_count * N * 2 * hp.h_kv * hp.hd


def estimator_features_exact(hp, ids, emb, info):
    """Section 7 features for every position, straightforward float64 loops.
    ids: list of n ints; emb: (n, d) float32 numpy (raw token_embd rows).
    Returns (n, 4) float32: [e, s, y, l]."""
    n_all = len(ids)
    W = hp.complexity_window
    out = np.zeros((n_all, 4), dtype=np.float32)
    e64 = emb.astype(np.float64)
    for t in range(n_all):
        a = max(0, t - W + 1)
        win = ids[a:t + 1]
        n = len(win)
        if n > 1:
            cnt = {}
            for x in win:
                cnt[x] = cnt.get(x, 0) + 1
            H = 0.0
            for c in cnt.values():
                p = c / n
                H -= p * math.log(p)
            ent = H / math.log(n)
            E = e64[a:t + 1]
            mu = E.mean(axis=0)
            num = float(((E - mu) ** 2).sum())
            den = float((E ** 2).sum())
            sd = num / den if den > 0 else 0.0
        else:
            ent = 0.0
            sd = 0.0
        depth = 0
        D = 0
        q = 0
        for x in win:
            b = info.get_bytes(x)
            for ch in b:
                if ch in b"([{":
                    depth += 1
                    D = max(D, depth)
                elif ch in b")]}":
                    depth = max(0, depth - 1)
            if any(ch in PUNCT for ch in b):
                q += 1
        y = 0.5 * min(D, 8) / 8.0 + 0.5 * (q / n)
        ell = math.log(1 + t + 1) / math.log(1 + hp.context_length)
        out[t] = np.array([ent, sd, y, ell], dtype=np.float64).astype(np.float32)
    return out


def estimator_features(hp, ids, emb, info):
    """The same, vectorised over a batch (torch, float64, no grad).
    ids: (B, T) int64; emb: (B, T, d) float32. Returns (B, T, 4) float32."""
    with torch.no_grad():
        B, T = ids.shape
        W = hp.complexity_window
        dev = ids.device
        t = torch.arange(T, device=dev)
        n = torch.clamp(t + 1, max=W).to(torch.float64)               # (T,)
        pad = torch.full((B, W - 1), -1, dtype=ids.dtype, device=dev)
        win = torch.cat([pad, ids], 1).unfold(1, W, 1)                 # (B, T, W)
        valid = win >= 0
        eq = (win.unsqueeze(-1) == win.unsqueeze(-2)) & valid.unsqueeze(-2)
        cnt = eq.sum(-1).to(torch.float64).clamp(min=1)                # (B, T, W)
        H = -(torch.where(valid, torch.log(cnt / n[None, :, None]), torch.zeros_like(cnt))
              .sum(-1)) / n
        ent = torch.where(n > 1, H / torch.log(n.clamp(min=2)), torch.zeros_like(H))
        e64 = emb.to(torch.float64)
        z = torch.zeros(B, 1, e64.shape[-1], dtype=torch.float64, device=dev)
        cs = torch.cat([z, torch.cumsum(e64, 1)], 1)                   # (B, T+1, d)
        sq = torch.cat([z[..., 0], torch.cumsum((e64 * e64).sum(-1), 1)], 1)  # (B, T+1)
        lo = (t + 1 - n.long())
        S1 = cs[:, t + 1] - cs[:, lo]
        S2 = sq[:, t + 1] - sq[:, lo]
        num = (S2 - (S1 * S1).sum(-1) / n).clamp(min=0)
        sd = torch.where((n > 1) & (S2 > 0), num / S2.clamp(min=1e-300), torch.zeros_like(S2))
        pun = torch.cat([torch.zeros(B, 1, dtype=torch.float64, device=dev),
                         torch.cumsum(info.t_punct[ids].to(torch.float64), 1)], 1)
        q = (pun[:, t + 1] - pun[:, lo]) / n
        depth = torch.zeros(B, T, dtype=torch.long, device=dev)
        D = torch.zeros(B, T, dtype=torch.long, device=dev)
        evs = info.t_ev[win.clamp(min=0)]                              # (B, T, W, max_ev)
        evs = evs * valid.unsqueeze(-1)
        for j in range(W):
            for k in range(evs.shape[-1]):
                ev = evs[:, :, j, k]
                depth = torch.clamp(depth + ev, min=0)
                D = torch.maximum(D, depth)
        y = 0.5 * D.clamp(max=8).to(torch.float64) / 8.0 + 0.5 * q
        ell = (torch.log((2 + t).to(torch.float64)) / math.log(1 + hp.context_length))
        f = torch.stack([ent, sd, y, ell.expand(B, T)], -1)
        return f.to(torch.float32)


def sentence_layout(hp, ids_row, info):
    """For one sequence: sentence id of every token, and the end position of every
    completed sentence (spec 6, 12.2)."""
    sid = np.zeros(len(ids_row), dtype=np.int64)
    ends = []
    cur = 0
    length = 0
    for t, x in enumerate(ids_row):
        sid[t] = cur
        length += 1
        term = 0 <= x < len(info.ends) and info.ends[x]
        if term or length >= hp.max_sentence_length:
            ends.append(t)
            cur += 1
            length = 0
    return sid, ends


def rms(x, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps)


def rope_tables(T, m, base, dev):
    i = torch.arange(m // 2, dtype=torch.float64)
    theta = torch.pow(torch.tensor(float(base), dtype=torch.float64), -2.0 * i / m)
    ang = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    return torch.cos(ang).to(torch.float32).to(dev), torch.sin(ang).to(torch.float32).to(dev)


def rope(u, cos, sin):
    """u (..., T, nh, m) rotate-half; cos/sin (T, m/2)."""
    m = u.shape[-1]
    a, b = u[..., : m // 2], u[..., m // 2:]
    c = cos[:, None, :]
    s = sin[:, None, :]
    return torch.cat([a * c - b * s, a * s + b * c], -1)


class HybridMoE(nn.Module):
    def __init__(self, hp, feat, tok_bytes):
        super().__init__()
        self.hp = hp
        self.feat = dict(feat)
        self.info = TokenInfo(tok_bytes)
        self.specs = tensor_specs(hp, self.feat)
        self.p = nn.ParameterDict()
        for name, shape in self.specs:
            self.p[_key(name)] = nn.Parameter(torch.zeros(shape, dtype=torch.float32))

    # ---- tensors ------------------------------------------------------------------
    def w(self, name):
        k = _key(name)
        return self.p[k] if k in self.p else None

    def load_tensors(self, tensors):
        want = dict(self.specs)
        for name, shape in self.specs:
            if name not in tensors:
                raise ValueError("missing tensor %s" % name)
            a = tensors[name]
            if tuple(a.shape) != tuple(shape):
                raise ValueError("tensor %s: shape %s, expected %s" % (name, a.shape, shape))
            with torch.no_grad():
                self.p[_key(name)].copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
        extra = set(tensors) - set(want)
        if extra:
            raise ValueError("unexpected tensors: %s" % sorted(extra))

    def tensors(self):
        return {name: self.p[_key(name)].detach().cpu().numpy().copy()
                for name, _ in self.specs}

    def n_params(self):
        return sum(int(np.prod(s)) for _, s in self.specs)

    # ---- complexity -----------------------------------------------------------------
    def controller(self, f):
        """f (..., 4) float32 -> c (...) float32 (section 7)."""
        hp = self.hp
        if self.feat.get("ctrl"):
            z = F.silu(f @ self.w("ctrl.fc1.weight").t() + self.w("ctrl.fc1.bias"))
            y = z @ self.w("ctrl.fc2.weight").t() + self.w("ctrl.fc2.bias")
            return torch.sigmoid(y)[..., 0]
        we, ws, wy = [torch.tensor(x, dtype=torch.float32) for x in hp.complexity_weights]
        return torch.clamp(we * f[..., 0] + ws * f[..., 1] + wy * f[..., 2], 0.0, 1.0)

    # ---- blocks -------------------------------------------------------------------------
    def norm(self, x, g, b, c):
        y = rms(x, self.hp.rms_eps)
        gain = self.w(g)
        if b is not None and self.w(b) is not None:
            gain = gain + (2.0 * c - 1.0).unsqueeze(-1) * self.w(b)
        return y * gain

    def attn_gl(self, l, x, T_, wins, cos, sin):
        hp = self.hp
        p = "blk.%d." % l
        B, T, _ = x.shape
        h, hkv, hd = hp.h, hp.h_kv, hp.hd
        q = (x @ self.w(p + "attn_q.weight").t()).view(B, T, h, hd)
        k = (x @ self.w(p + "attn_k.weight").t()).view(B, T, hkv, hd)
        v = (x @ self.w(p + "attn_v.weight").t()).view(B, T, hkv, hd)
        if self.w(p + "attn_q_norm.weight") is not None:
            q = rms(q, hp.rms_eps) * self.w(p + "attn_q_norm.weight")
            k = rms(k, hp.rms_eps) * self.w(p + "attn_k_norm.weight")
        q = rope(q, cos, sin)
        k = rope(k, cos, sin)
        rep = h // hkv
        k = k.repeat_interleave(rep, dim=2)
        v = v.repeat_interleave(rep, dim=2)
        s = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(hd)
        ti = torch.arange(T)
        mask = ti[None, :] <= ti[:, None]                           # (T, S): s <= t
        if T_ == "L":
            dist = ti[:, None] - ti[None, :]
            mask = mask[None] & (dist[None] < wins[:, None, None])   # (B, T, S)
            mask = mask[:, None]
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, -1)
        o = torch.einsum("bhts,bshd->bthd", a, v).reshape(B, T, h * hd)
        return o @ self.w(p + "attn_output.weight").t(), mask

    def attn_m(self, l, x, cos, sin):
        hp = self.hp
        p = "blk.%d." % l
        B, T, _ = x.shape
        h, dn, dr, dv, r = (hp.h, hp.qk_nope_head_dim, hp.qk_rope_head_dim, hp.v_head_dim,
                            hp.kv_lora_rank)
        if hp.q_lora_rank > 0:
            qa = x @ self.w(p + "attn_q_a.weight").t()
            qa = rms(qa, hp.rms_eps) * self.w(p + "attn_q_a_norm.weight")
            q = qa @ self.w(p + "attn_q_b.weight").t()
        else:
            q = x @ self.w(p + "attn_q.weight").t()
        q = q.view(B, T, h, dn + dr)
        q_nope, q_rope = q[..., :dn], rope(q[..., dn:], cos, sin)
        kva = x @ self.w(p + "attn_kv_a_mqa.weight").t()
        ckv = rms(kva[..., :r], hp.rms_eps) * self.w(p + "attn_kv_a_norm.weight")
        k_rope = rope(kva[..., r:].unsqueeze(2), cos, sin)              # (B, T, 1, dr)
        kv = (ckv @ self.w(p + "attn_kv_b.weight").t()).view(B, T, h, dn + dv)
        k_nope, v = kv[..., :dn], kv[..., dn:]
        s = (torch.einsum("bthd,bshd->bhts", q_nope, k_nope) +
             torch.einsum("bthd,bsd->bhts", q_rope, k_rope[:, :, 0])) / math.sqrt(dn + dr)
        ti = torch.arange(T)
        mask = ti[None, :] <= ti[:, None]
        s = s.masked_fill(~mask, float("-inf"))
        a = torch.softmax(s, -1)
        o = torch.einsum("bhts,bshd->bthd", a, v).reshape(B, T, h * dv)
        return o @ self.w(p + "attn_output.weight").t()

    def swiglu(self, x, wg, wu, wd):
        return (F.silu(x @ wg.t()) * (x @ wu.t())) @ wd.t()

    def moe(self, l, x, c, ctl):
        """x (B, T, d), c (B, T). Returns (out, k (B,T), idx (B,T,K), aux dict)."""
        hp = self.hp
        p = "blk.%d." % l
        B, T, d = x.shape
        E = hp.expert_count
        K = hp.expert_used_count
        kmin = hp.router_k_min
        if ctl.get("max_experts"):
            K = int(ctl["max_experts"])
            kmin = min(kmin, K)
        if ctl.get("static"):
            kmin = K
        logits = x @ self.w(p + "ffn_gate_inp.weight").t()
        prob = torch.softmax(logits, -1)
        ps, idx = torch.sort(prob.detach(), dim=-1, descending=True, stable=True)
        ps = ps[..., :K]
        idx = idx[..., :K]
        if ctl.get("router_threshold") is not None:
            tau = torch.full_like(c, float(ctl["router_threshold"]))
        else:
            tau = torch.clamp(torch.tensor(hp.router_threshold, dtype=torch.float32) +
                              torch.tensor(hp.router_threshold_gain, dtype=torch.float32) *
                              (c.detach() - torch.tensor(0.5, dtype=torch.float32)), 0.0, 1.0)
        k = torch.full((B, T), K, dtype=torch.long)
        found = torch.zeros((B, T), dtype=torch.bool)
        cum = torch.zeros((B, T), dtype=torch.float32)
        for j in range(K):
            cum = cum + ps[..., j]
            if j + 1 >= kmin:
                hit = (cum >= tau) & ~found
                k = torch.where(hit, torch.full_like(k, j + 1), k)
                found = found | hit
        k = torch.where(tau >= 1.0, torch.full_like(k, K), k)
        slot = torch.arange(K)
        sel = slot[None, None, :] < k[..., None]                          # (B, T, K)
        pw = torch.gather(prob, -1, idx) * sel                            # differentiable
        if hp.expert_weights_norm:
            wts = pw / pw.sum(-1, keepdim=True)
        else:
            wts = pw
        xf = x.reshape(-1, d)
        out = torch.zeros_like(xf)
        idxf = idx.reshape(-1, K)
        wf = wts.reshape(-1, K)
        self_f = sel.reshape(-1, K)
        G = self.w(p + "ffn_gate_exps.weight")
        U = self.w(p + "ffn_up_exps.weight")
        D = self.w(p + "ffn_down_exps.weight")
        for e in range(E):
            m = (idxf == e) & self_f
            rows = m.any(-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            we = (wf * m)[rows].sum(-1, keepdim=True)
            ye = self.swiglu(xf[rows], G[e], U[e], D[e])
            out = out.index_add(0, rows, ye * we)
        out = out * hp.expert_weights_scale
        if hp.expert_shared_count > 0:
            out = out + self.swiglu(xf, self.w(p + "ffn_gate_shexp.weight"),
                                    self.w(p + "ffn_up_shexp.weight"),
                                    self.w(p + "ffn_down_shexp.weight"))
        # load balancing (Switch style): E * sum_e f_e * P_e
        with torch.no_grad():
            cnt = torch.zeros(E).index_add(0, idxf[self_f], torch.ones(int(self_f.sum())))
            frac = cnt / cnt.sum().clamp(min=1)
        lb = E * (frac * prob.reshape(-1, E).mean(0)).sum()
        return out.view(B, T, d), k, idx, {"lb": lb}

    def cross_scale(self, ids, emb, ctl):
        """CrossScale(t) for every position (section 6, 12.12). emb (B, T, d)."""
        hp = self.hp
        B, T, d = emb.shape
        P = hp.phrase_span
        dx = hp.dx
        q = emb @ self.w("xscale.q.weight").t()                          # (B, T, dx)
        Wk, Wv = self.w("xscale.k.weight"), self.w("xscale.v.weight")
        se = self.w("xscale.scale_embd.weight")
        ti = torch.arange(T)
        keys, vals, masks = [], [], []
        Np = T // P
        if Np > 0:
            pr = emb[:, :Np * P].reshape(B, Np, P, d).sum(2) / float(P)
            keys.append(pr @ Wk.t() + se[0])
            vals.append(pr @ Wv.t())
            j = torch.arange(Np)
            nv = (ti + 1) // P                                             # visible count
            vis = ((j[None, :] + 1) * P - 1 <= ti[:, None]) & \
                (j[None, :] >= nv[:, None] - hp.max_phrases)
            masks.append(vis[None].expand(B, T, Np))
        lays = [sentence_layout(hp, row.tolist(), self.info) for row in ids]
        Ns = max([len(e) for _, e in lays] + [0])
        if Ns > 0:
            sums = torch.zeros(B, Ns + 1, d)
            cnts = torch.zeros(B, Ns + 1)
            endpos = torch.full((B, Ns), 1 << 30, dtype=torch.long)
            nvis = torch.zeros(B, T, dtype=torch.long)
            for b, (sid, ends) in enumerate(lays):
                sidt = torch.from_numpy(np.minimum(sid, Ns))
                sums[b] = sums[b].index_add(0, sidt, emb[b])
                cnts[b] = cnts[b].index_add(0, sidt, torch.ones(T))
                if ends:
                    endpos[b, :len(ends)] = torch.tensor(ends)
                    isend = torch.zeros(T, dtype=torch.long)
                    isend[torch.tensor(ends)] = 1
                    nvis[b] = torch.cumsum(isend, 0)
            sm = sums[:, :Ns] / cnts[:, :Ns].clamp(min=1).unsqueeze(-1)
            keys.append(sm @ Wk.t() + se[1])
            vals.append(sm @ Wv.t())
            kk = torch.arange(Ns)
            vis = (endpos[:, None, :] <= ti[None, :, None]) & \
                (kk[None, None, :] >= nvis[:, :, None] - hp.max_sentences)
            masks.append(vis)
        if not keys:
            return torch.zeros_like(emb), None
        Kx = torch.cat(keys, 1)
        Vx = torch.cat(vals, 1)
        M = torch.cat(masks, 2)                                             # (B, T, R)
        s = torch.einsum("btx,brx->btr", q, Kx) / math.sqrt(dx)
        s = s.masked_fill(~M, float("-inf"))
        s = torch.cat([s, torch.zeros(B, T, 1)], -1)                        # null entry last
        a = torch.softmax(s, -1)[..., :-1]
        o = torch.einsum("btr,brx->btx", a, Vx)
        return o @ self.w("xscale.o.weight").t(), M

    # ---- full forward -------------------------------------------------------------------
    def forward(self, ids, c=None, wins=None, ctl=None):
        """ids (B, T) int64. c (B, T) float32 complexity (None: estimator + controller).
        wins (B,) int64 window of L layers (None: policy with c_req over the whole
        sequence and N = T). ctl: request controls {complexity, window, max_experts,
        router_threshold, static}. Returns dict: logits (B,T,V), c, wins, k/idx per MoE
        layer, aux losses."""
        hp = self.hp
        ctl = ctl or {}
        B, T = ids.shape
        E_tab = self.w("token_embd.weight")
        emb = E_tab[ids]                                                    # (B, T, d)
        feats = None
        if c is None:
            if ctl.get("complexity") is not None:
                c = torch.full((B, T), float(ctl["complexity"]), dtype=torch.float32)
            else:
                feats = estimator_features(hp, ids, emb.detach(), self.info)
                c = self.controller(feats)
        if wins is None:
            if ctl.get("window") is not None:
                wins = torch.full((B,), int(ctl["window"]), dtype=torch.long)
            elif ctl.get("static"):
                wins = torch.full((B,), T, dtype=torch.long)
            else:
                creq = c.detach().to(torch.float64).mean(1)
                wins = torch.tensor([window_policy(hp, float(x), T) for x in creq])
        h = emb
        if self.feat.get("xscale") and not ctl.get("static"):
            h = h + self.cross_scale(ids, emb, ctl)[0]
        dev = ids.device
        cos_gl, sin_gl = rope_tables(T, hp.hd, hp.rope_freq_base, dev)
        if "M" in hp.layer_pattern:
            cos_m, sin_m = rope_tables(T, hp.qk_rope_head_dim, hp.rope_freq_base, dev)
        ks, idxs = [], []
        lb = torch.zeros(())
        for l, Ty in enumerate(hp.layer_pattern):
            p = "blk.%d." % l
            xn = self.norm(h, p + "attn_norm.weight", p + "attn_norm_adapt.weight", c)
            if Ty in "GL":
                a, _ = self.attn_gl(l, xn, Ty, wins, cos_gl, sin_gl)
            else:
                a = self.attn_m(l, xn, cos_m, sin_m)
            if self.w(p + "post_attention_norm.weight") is not None:
                a = self.norm(a, p + "post_attention_norm.weight", None, c)
            h = h + a
            xn = self.norm(h, p + "ffn_norm.weight", p + "ffn_norm_adapt.weight", c)
            if hp.is_moe(l):
                f, k, idx, aux = self.moe(l, xn, c, ctl)
                ks.append(k)
                idxs.append(idx)
                lb = lb + aux["lb"]
            else:
                f = self.swiglu(xn, self.w(p + "ffn_gate.weight"), self.w(p + "ffn_up.weight"),
                                self.w(p + "ffn_down.weight"))
            if self.w(p + "post_ffw_norm.weight") is not None:
                f = self.norm(f, p + "post_ffw_norm.weight", None, c)
            h = h + f
        hn = self.norm(h, "output_norm.weight", None, c)
        Wout = self.w("output.weight")
        if Wout is None:
            Wout = E_tab
        logits = hn @ Wout.t()
        return {"logits": logits, "c": c, "feats": feats, "wins": wins, "k": ks, "idx": idxs,
                "lb": lb}

    # ---- one request (reference semantics of a session) --------------------------------
    def complexity_exact(self, ids, ctl=None):
        """c_t for every token of ids (a python list): estimator (exact loops) +
        controller, or the request's fixed complexity."""
        ctl = ctl or {}
        if ctl.get("complexity") is not None:
            return torch.full((len(ids),), float(ctl["complexity"]), dtype=torch.float32)
        with torch.no_grad():
            emb = self.w("token_embd.weight")[torch.tensor(ids)].numpy()
            f = estimator_features_exact(self.hp, ids, emb, self.info)
            if self.feat.get("ctrl"):
                return torch.from_numpy(self.controller_exact(f))
            return self.controller(torch.from_numpy(f))

    def controller_exact(self, f):
        """The controller in scalar float32 in the spec's literal order: each dot
        product summed left to right then the bias added; sigmoid(z) = 1 / (1 + exp(-z))
        with exp correctly rounded; silu(z) = z * sigmoid(z). f (n, 4) float32."""
        f32 = np.float32
        W1 = self.w("ctrl.fc1.weight").detach().numpy()
        b1 = self.w("ctrl.fc1.bias").detach().numpy()
        W2 = self.w("ctrl.fc2.weight").detach().numpy()
        b2 = self.w("ctrl.fc2.bias").detach().numpy()

        def sigmoid(z):
            e = f32(math.exp(-float(z)))
            return f32(f32(1.0) / f32(f32(1.0) + e))
        out = np.zeros(len(f), dtype=np.float32)
        for t in range(len(f)):
            z = []
            for j in range(W1.shape[0]):
                acc = f32(0.0)
                for i in range(W1.shape[1]):
                    acc = f32(acc + f32(W1[j, i] * f[t, i]))
                acc = f32(acc + b1[j])
                z.append(f32(acc * sigmoid(acc)))
            acc = f32(0.0)
            for j in range(W2.shape[1]):
                acc = f32(acc + f32(W2[0, j] * z[j]))
            acc = f32(acc + b2[0])
            out[t] = sigmoid(acc)
        return out

    def plan(self, ids, n_prompt, max_tokens, ctl=None):
        """c_req (float64), N and the window of a request (section 8, 12.6)."""
        ctl = ctl or {}
        c = self.complexity_exact(ids[:n_prompt], ctl)
        c_req = float(np.mean(c.numpy().astype(np.float64)))
        if ctl.get("complexity") is not None:
            c_req = float(np.float32(ctl["complexity"]))
        N = n_prompt + max_tokens
        if n_prompt < 1 or N > self.hp.context_length:
            raise ValueError("request: %d prompt + %d tokens, context_length %d (spec 12.9)"
                             % (n_prompt, max_tokens, self.hp.context_length))
        if ctl.get("window") is not None:
            w = int(ctl["window"])
        else:
            w = window_policy(self.hp, c_req, N)
        return c_req, N, w

    def run(self, prompt, max_tokens=0, n_gen=0, ctl=None):
        """Reference request: returns dict with c (per token), c_req, w, N, logits at
        every position of prompt + generated (minus the last generated), the greedy
        continuation and per-token k / experts per MoE layer."""
        ctl = ctl or {}
        with torch.no_grad():
            c_req, N, w = self.plan(prompt, len(prompt), max_tokens, ctl)
            ids = list(prompt)
            gen = []
            for g in range(n_gen + 1):
                x = torch.tensor([ids])
                c = self.complexity_exact(ids, ctl).unsqueeze(0)
                out = self.forward(x, c=c, wins=torch.tensor([w]), ctl=ctl)
                if g == n_gen:
                    break
                last = out["logits"][0, -1]
                nxt = int(torch.argmax(last).item())   # first index of the maximum
                gen.append(nxt)
                ids.append(nxt)
            return {"c_req": c_req, "N": N, "w": w, "c": out["c"][0].numpy(),
                    "logits": out["logits"][0].numpy(), "generated": gen,
                    "k": [k[0].numpy() for k in out["k"]],
                    "idx": [i[0].numpy() for i in out["idx"]],
                    "tokens": ids}


def load(path):
    """Loads a hybridmoe GGUF into (model, meta, tokenizer)."""
    import gguf
    from bpe import Tokenizer
    meta, tensors = gguf.read(path)
    if meta.get("general.architecture") != ARCH:
        raise ValueError("%s: architecture %r" % (path, meta.get("general.architecture")))
    V = tensors["token_embd.weight"].shape[0]
    hp = HParams.from_meta(meta, V)
    tok = Tokenizer.from_meta(meta)
    feat = features_from_tensors(tensors.keys())
    m = HybridMoE(hp, feat, [tok.token_bytes(i) for i in range(V)])
    m.load_tensors(tensors)
    return m, meta, tok


def save(path, model, tok, name="hybridmoe", dtype=0, extra_meta=None):
    import gguf
    from gguf import Typed, T_STR, T_U32
    meta = {"general.architecture": Typed(T_STR, ARCH), "general.name": Typed(T_STR, name),
            "general.alignment": Typed(T_U32, 32)}
    meta.update(model.hp.to_meta())
    if extra_meta:
        meta.update(extra_meta)
    meta.update(tok.meta())
    f32_names = [n for n, _ in model.specs if n.startswith("ctrl.") or
                 n == "xscale.scale_embd.weight"]
    gguf.write(path, meta, model.tensors(), dtype=dtype, f32_names=f32_names)


def init_weights(model, seed, std=None, golden=False):
    """Deterministic initialisation. Matrices ~ N(0, 1/in) (or std); norm gains 1
    (golden: 1 + N(0, 0.1)), adaptive gains 0 (golden: N(0, 0.2)), controller small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, shape in model.specs:
            t = model.p[_key(name)]
            if name.endswith("_adapt.weight"):
                t.copy_(torch.randn(shape, generator=g) * (0.2 if golden else 0.0))
            elif len(shape) == 1 and not name.startswith("ctrl."):
                t.copy_(1.0 + (torch.randn(shape, generator=g) * 0.1 if golden else 0.0))
            elif name.startswith("ctrl."):
                t.copy_(torch.randn(shape, generator=g) * (0.6 if golden else 0.3))
            elif name == "xscale.scale_embd.weight":
                t.copy_(torch.randn(shape, generator=g) * 0.5)
            else:
                fan_in = shape[-1]
                s = std if std is not None else 1.0 / math.sqrt(fan_in)
                if name == "token_embd.weight" or name == "output.weight":
                    s = std if std is not None else (1.0 if golden else 0.02)
                if name.endswith("ffn_gate_inp.weight") and golden:
                    s = 2.0 / math.sqrt(fan_in)
                t.copy_(torch.randn(shape, generator=g) * s)
