"""Small GGUF v3 reader/writer for the hybridmoe reference implementation.

Independent of the C code (engine/gguf.c). Supports every metadata value type
(u8..f64, bool, string, arrays of any of them, nested arrays) and tensors of type
F32 (0) and F16 (1).

Layout: "GGUF" | u32 version=3 | u64 n_tensors | u64 n_kv | kv pairs | tensor infos |
padding to general.alignment (default 32) | tensor data (offsets relative to its start,
each aligned).

A tensor is kept as a numpy array whose shape is the row-major shape, i.e. the GGUF
`ne` list reversed: a matrix W (out x in) has ne = [in, out], a stacked expert tensor
(E x out x in) has ne = [in, out, E].
"""

import struct

import numpy as np

GGUF_MAGIC = b"GGUF"

T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 = range(13)

_SCALAR = {
    T_U8: "<B", T_I8: "<b", T_U16: "<H", T_I16: "<h", T_U32: "<I", T_I32: "<i",
    T_F32: "<f", T_BOOL: "<?", T_U64: "<Q", T_I64: "<q", T_F64: "<d",
}

DT_F32 = 0
DT_F16 = 1


class Typed:
    """A metadata value with an explicit GGUF type (scalar) or element type (array)."""

    def __init__(self, gtype, value, elem=None):
        self.gtype = gtype
        self.value = value
        self.elem = elem

    def __repr__(self):
        return "Typed(%d, %r, %r)" % (self.gtype, self.value, self.elem)


def u32(v):
    return Typed(T_U32, int(v))


def f32(v):
    return Typed(T_F32, float(v))


def arr(elem, values):
    return Typed(T_ARR, list(values), elem)


class Reader:
    def __init__(self, data):
        self.b = data
        self.o = 0

    def take(self, n):
        if self.o + n > len(self.b):
            raise ValueError("gguf: truncated at offset %d" % self.o)
        v = self.b[self.o:self.o + n]
        self.o += n
        return v

    def scalar(self, t):
        fmt = _SCALAR[t]
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        n = self.scalar(T_U64)
        return bytes(self.take(n)).decode("utf-8")

    def value(self, t):
        if t == T_STR:
            return self.string()
        if t == T_ARR:
            et = self.scalar(T_U32)
            n = self.scalar(T_U64)
            return Typed(T_ARR, [self.value(et) for _ in range(n)], et)
        if t not in _SCALAR:
            raise ValueError("gguf: unknown value type %d" % t)
        return self.scalar(t)


def read(path):
    """Returns (meta, tensors): meta maps key -> python value (arrays as lists),
    meta_types maps key -> Typed, tensors maps name -> float32 numpy array."""
    with open(path, "rb") as f:
        data = f.read()
    r = Reader(data)
    if bytes(r.take(4)) != GGUF_MAGIC:
        raise ValueError("%s: not a GGUF file" % path)
    ver = r.scalar(T_U32)
    if ver != 3:
        raise ValueError("%s: GGUF version %d, expected 3" % (path, ver))
    n_t = r.scalar(T_U64)
    n_kv = r.scalar(T_U64)
    meta = {}
    for _ in range(n_kv):
        k = r.string()
        t = r.scalar(T_U32)
        v = r.value(t)
        meta[k] = v.value if isinstance(v, Typed) else v
    infos = []
    for _ in range(n_t):
        name = r.string()
        nd = r.scalar(T_U32)
        ne = [r.scalar(T_U64) for _ in range(nd)]
        dt = r.scalar(T_U32)
        off = r.scalar(T_U64)
        infos.append((name, ne, dt, off))
    align = int(meta.get("general.alignment", 32))
    base = (r.o + align - 1) // align * align
    tensors = {}
    for name, ne, dt, off in infos:
        n = int(np.prod(ne)) if ne else 1
        shape = tuple(reversed(ne))
        if dt == DT_F32:
            a = np.frombuffer(data, dtype="<f4", count=n, offset=base + off)
        elif dt == DT_F16:
            a = np.frombuffer(data, dtype="<f2", count=n, offset=base + off).astype(np.float32)
        else:
            raise ValueError("%s: tensor %s: unsupported type %d" % (path, name, dt))
        tensors[name] = np.array(a, dtype=np.float32).reshape(shape)
    return meta, tensors


def _guess_type(v):
    if isinstance(v, Typed):
        return v
    if isinstance(v, bool):
        return Typed(T_BOOL, v)
    if isinstance(v, int):
        return Typed(T_U32 if 0 <= v < 2 ** 32 else T_I64, v)
    if isinstance(v, float):
        return Typed(T_F32, v)
    if isinstance(v, str):
        return Typed(T_STR, v)
    if isinstance(v, (list, tuple)):
        if not v:
            return Typed(T_ARR, [], T_I32)
        inner = _guess_type(v[0])
        return Typed(T_ARR, list(v), inner.gtype)
    raise TypeError("gguf: cannot store %r" % (v,))


def _pack_value(t, v, out):
    if t == T_STR:
        b = v.encode("utf-8")
        out.append(struct.pack("<Q", len(b)))
        out.append(b)
    elif t == T_ARR:
        tv = v if isinstance(v, Typed) else _guess_type(v)
        out.append(struct.pack("<IQ", tv.elem, len(tv.value)))
        if tv.elem in _SCALAR and tv.elem != T_BOOL:
            out.append(np.asarray(tv.value, dtype=np.dtype(_SCALAR[tv.elem])).tobytes())
        else:
            for x in tv.value:
                _pack_value(tv.elem, x, out)
    else:
        out.append(struct.pack(_SCALAR[t], v))


def write(path, meta, tensors, dtype=DT_F32, f32_names=None, align=32):
    """meta: ordered dict key -> value (python value or Typed); tensors: ordered dict
    name -> numpy array (row-major shape). Matrices (ndim >= 2) are stored in `dtype`;
    vectors always in f32 (and any name in f32_names)."""
    f32_names = set(f32_names or ())
    out = [GGUF_MAGIC, struct.pack("<IQQ", 3, len(tensors), len(meta))]
    for k, v in meta.items():
        tv = _guess_type(v)
        kb = k.encode("utf-8")
        out.append(struct.pack("<Q", len(kb)))
        out.append(kb)
        out.append(struct.pack("<I", tv.gtype))
        _pack_value(tv.gtype, tv if tv.gtype == T_ARR else tv.value, out)
    blobs = []
    off = 0
    for name, a in tensors.items():
        a = np.ascontiguousarray(a, dtype=np.float32)
        dt = dtype if (a.ndim >= 2 and name not in f32_names) else DT_F32
        blob = a.astype("<f2" if dt == DT_F16 else "<f4").tobytes()
        ne = list(reversed(a.shape))
        nb = name.encode("utf-8")
        out.append(struct.pack("<Q", len(nb)))
        out.append(nb)
        out.append(struct.pack("<I", len(ne)))
        out.append(struct.pack("<%dQ" % len(ne), *ne))
        out.append(struct.pack("<IQ", dt, off))
        blobs.append((off, blob))
        off = (off + len(blob) + align - 1) // align * align
    head = b"".join(out)
    pad = (-len(head)) % align
    with open(path, "wb") as f:
        f.write(head)
        f.write(b"\0" * pad)
        pos = 0
        for o, blob in blobs:
            f.write(b"\0" * (o - pos))
            f.write(blob)
            pos = o + len(blob)
        f.write(b"\0" * ((-pos) % align))
