"""Replicated arithmetic shares and their codec to SPU's ``libspu.Share``.

ABY3 (SPU's 3-party protocol) shares x in Z_{2^l} as x = s0 + s1 + s2; party i holds
the pair (s_i, s_{i+1}). SPU stores one party's share of a tensor as a ``libspu.Share``
whose meta is a ``ValueMeta`` with storage type ``aby3.AShr<FM32|FM64>`` and whose
chunks concatenate to a C-contiguous (numel, 2) array of uint32/uint64 — exactly the
pair above. :class:`AShare` is that pair as numpy, with its ring and logical dtype.
"""

from __future__ import annotations

import dataclasses
import secrets

import numpy as np

from .errors import PlanError, ShareFormatError
from .plan import Plan
from .rings import RingSpec

_STORAGE = {"FM32": "aby3.AShr<FM32>", "FM64": "aby3.AShr<FM64>"}
_STORAGE_TO_FIELD = {v: k for k, v in _STORAGE.items()}

# logical dtype name <-> SPU DataType name
_DTYPE_TO_DT = {
    "float16": "DT_F16",
    "bfloat16": "DT_F16",
    "float32": "DT_F32",
    "float64": "DT_F64",
    "int8": "DT_I8",
    "uint8": "DT_U8",
    "int16": "DT_I16",
    "uint16": "DT_U16",
    "int32": "DT_I32",
    "uint32": "DT_U32",
    "int64": "DT_I64",
    "uint64": "DT_U64",
}
_DT_TO_DTYPE = {
    "DT_F16": "float16",
    "DT_F32": "float32",
    "DT_F64": "float64",
    "DT_I8": "int8",
    "DT_U8": "uint8",
    "DT_I16": "int16",
    "DT_U16": "uint16",
    "DT_I32": "int32",
    "DT_U32": "uint32",
    "DT_I64": "int64",
    "DT_U64": "uint64",
}

#: Largest chunk written into a libspu.Share (SPU's own default chunk size is 128 KiB).
WORLD_SIZE = 3  # ABY3
CHUNK_BYTES = 128 * 1024


def is_fixed_point(dtype: str) -> bool:
    """Floating dtypes are fixed point in SPU; integers are stored unscaled."""
    return dtype in ("float16", "bfloat16", "float32", "float64")


@dataclasses.dataclass(frozen=True)
class AShare:
    """One party's replicated share of one tensor.

    ``components`` has shape ``shape + (2,)`` and the ring's unsigned dtype:
    ``components[..., 0] = s_rank``, ``components[..., 1] = s_{rank+1}``.
    ``dtype`` is the logical element type (float32, float16, int32, ...). Floating
    types carry ``ring.frac_bits`` fraction bits; integer types are unscaled.
    """

    ring: RingSpec
    shape: tuple
    dtype: str
    components: np.ndarray

    def __post_init__(self):
        shape = tuple(int(d) for d in self.shape)
        object.__setattr__(self, "shape", shape)
        comp = np.asarray(self.components)
        if comp.dtype != self.ring.dtype:
            raise ShareFormatError(
                f"share components have dtype {comp.dtype}, ring {self.ring} needs {self.ring.dtype}"
            )
        if comp.shape != shape + (2,):
            raise ShareFormatError(
                f"share components have shape {comp.shape}, expected {shape + (2,)} for a "
                f"tensor of shape {shape}"
            )
        if self.dtype not in _DTYPE_TO_DT:
            raise ShareFormatError(f"unsupported logical dtype {self.dtype!r}")

    @property
    def frac_bits(self) -> int:
        """Fraction bits of the encoding: the ring's for floats, 0 for integers."""
        return self.ring.frac_bits if is_fixed_point(self.dtype) else 0

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.components.nbytes

    # ---- SPU codec -----------------------------------------------------------------
    def to_libspu(self):
        """Encode as a ``libspu.Share`` that an SPU runtime of ``ring.field`` accepts."""
        from spu import libspu

        meta = libspu.ValueMeta()
        meta.data_type = getattr(libspu.DataType, _DTYPE_TO_DT[self.dtype])
        meta.is_complex = False
        meta.visibility = libspu.Visibility.VIS_SECRET
        meta = _set_meta_shape(meta, self.shape)
        meta.storage_type = _STORAGE[self.ring.field]
        raw = np.ascontiguousarray(self.components).tobytes()
        share = libspu.Share()
        share.meta = meta.SerializeToString()
        chunks = []
        total = len(raw)
        for offset in range(0, max(total, 1), CHUNK_BYTES):
            chunk = libspu.ValueChunk()
            chunk.total_bytes = total
            chunk.chunk_offset = offset
            chunk.content = raw[offset : offset + CHUNK_BYTES]
            chunks.append(chunk.SerializeToString())
        share.share_chunks = chunks
        return share

    @classmethod
    def from_libspu(cls, share, ring: RingSpec | None = None, *, where: str = "share") -> "AShare":
        """Decode a ``libspu.Share`` holding ABY3 arithmetic shares.

        Anything else (public values, boolean shares, other protocols) raises
        :class:`ShareFormatError` naming the storage type. ``ring`` supplies the
        fraction bits (SPU's share does not record them); when given, its field must
        match the share's.
        """
        from spu import libspu

        meta = libspu.ValueMeta()
        meta.ParseFromString(share.meta)
        storage = meta.storage_type
        if storage not in _STORAGE_TO_FIELD:
            raise ShareFormatError(
                f"{where}: storage type {storage!r} is not an ABY3 arithmetic share "
                f"(expected one of {sorted(_STORAGE_TO_FIELD)}); make the value secret and "
                f"arithmetic (e.g. a float or integer tensor) before it crosses rings"
            )
        field = _STORAGE_TO_FIELD[storage]
        if ring is None:
            ring = RingSpec(field, 0)
        elif ring.field != field:
            raise ShareFormatError(
                f"{where}: share is {storage} but ring {ring} was expected"
            )
        dt_name = libspu.DataType(meta.data_type).name
        if dt_name not in _DT_TO_DTYPE:
            raise ShareFormatError(f"{where}: unsupported SPU data type {dt_name}")
        shape = tuple(meta.shape.dims)
        parts = []
        for raw_chunk in share.share_chunks:
            chunk = libspu.ValueChunk()
            chunk.ParseFromString(raw_chunk)
            parts.append((chunk.chunk_offset, chunk.content))
        parts.sort()
        raw = b"".join(p for _, p in parts)
        numel = int(np.prod(shape, dtype=np.int64))
        expected = numel * 2 * ring.dtype.itemsize
        if len(raw) != expected:
            raise ShareFormatError(
                f"{where}: share holds {len(raw)} bytes, a {storage} tensor of shape {shape} "
                f"needs {expected}"
            )
        comps = np.frombuffer(raw, dtype=ring.dtype).reshape(shape + (2,)).copy()
        return cls(ring, shape, _DT_TO_DTYPE[dt_name], comps)


def _set_meta_shape(meta, shape):
    # The binding's setter takes a list of dims and builds a fresh shape. (Writing into
    # ``meta.shape.dims`` of a new ValueMeta would write into protobuf's shared default
    # instance and leak into every later meta.)
    meta.shape = [int(d) for d in shape]
    return meta


# ---- plaintext helpers: sharing and reconstruction (input owners, tests) ----------
def share_ring_elements(elements: np.ndarray, ring: RingSpec, dtype: str, rng=None) -> list[AShare]:
    """Split ring elements X into three replicated shares (s0, s1, s2 uniform, sum X)."""
    rng = rng if rng is not None else np.random.Generator(np.random.PCG64(secrets.randbits(128)))
    x = np.asarray(elements).astype(ring.dtype)
    info = np.iinfo(ring.dtype)
    s0 = rng.integers(0, info.max, size=x.shape, dtype=ring.dtype, endpoint=True)
    s1 = rng.integers(0, info.max, size=x.shape, dtype=ring.dtype, endpoint=True)
    s2 = x - s0 - s1  # unsigned arithmetic wraps mod 2^l
    parts = [s0, s1, s2]
    return [
        AShare(ring, x.shape, dtype, np.stack([parts[i], parts[(i + 1) % 3]], axis=-1))
        for i in range(3)
    ]


def share_values(values, ring: RingSpec, dtype: str | None = None, rng=None) -> list[AShare]:
    """Secret-share a plaintext tensor into ``ring`` (fixed point for floats)."""
    arr = np.asarray(values)
    dtype = dtype or _dtype_name(arr.dtype)
    if is_fixed_point(dtype):
        elements = ring.encode(arr)
    else:
        ring.check_range(arr.astype(np.float64) * 2.0**-ring.frac_bits, what="integer input")
        elements = arr.astype(np.int64).astype(ring.signed_dtype).view(ring.dtype)
    return share_ring_elements(elements, ring, dtype, rng)


def reconstruct_elements(shares: list[AShare]) -> np.ndarray:
    """Sum of column 0 over the three parties (checks the replicas agree)."""
    if len(shares) != 3:
        raise ShareFormatError(f"reconstruction needs 3 shares, got {len(shares)}")
    ring = shares[0].ring
    for i, s in enumerate(shares):
        if s.ring.field != ring.field or s.shape != shares[0].shape:
            raise ShareFormatError(
                f"share {i} is {s.ring} {s.shape}, share 0 is {ring} {shares[0].shape}"
            )
    for i in range(3):
        if not np.array_equal(shares[i].components[..., 1], shares[(i + 1) % 3].components[..., 0]):
            raise ShareFormatError(
                f"shares are not consistent replicas: party {i}'s second component differs "
                f"from party {(i + 1) % 3}'s first"
            )
    return shares[0].components[..., 0] + shares[1].components[..., 0] + shares[2].components[..., 0]


def reconstruct(shares: list[AShare]) -> np.ndarray:
    """Plaintext value of three shares (float64 for fixed point, int64 for integers)."""
    elements = reconstruct_elements(shares)
    ring, dtype = shares[0].ring, shares[0].dtype
    if is_fixed_point(dtype):
        return ring.decode(elements)
    return ring.decode(elements, integer=True)


def _dtype_name(dt) -> str:
    name = np.dtype(dt).name
    if name == "bool":
        raise ShareFormatError(
            "boolean tensors are not arithmetic shares: convert them to an integer or float "
            "dtype first"
        )
    if name not in _DTYPE_TO_DT:
        raise ShareFormatError(f"unsupported input dtype {name}")
    return name


def share_plan_inputs(plan: Plan, inputs: dict, rng=None, *, only=None) -> list[dict]:
    """What the input owners do: secret-share each plaintext input into its binding's ring.

    Returns one dict of AShares per party; PlanError for a missing, unknown or misshaped
    input. ``only``: the names of the inputs this owner shares (e.g. the model owner's
    weights; default every input of the plan). Used by the simulator, the deployment
    driver and the service's owner alike.
    """
    bindings = plan.inputs if only is None else [b for b in plan.inputs if b.name in set(only)]
    if only is not None and len(bindings) != len(set(only)):
        unknown = sorted(set(only) - {b.name for b in plan.inputs})
        raise PlanError(f"unknown input(s) {unknown}; the plan takes {[b.name for b in plan.inputs]}")
    return share_bound_inputs(bindings, inputs, rng)


def share_bound_inputs(bindings, inputs: dict, rng=None) -> list[dict]:
    """:func:`share_plan_inputs` for a list of InputBindings (a client knows its own
    inputs' bindings from a model's metadata, not the whole plan)."""
    names = [b.name for b in bindings]
    missing = [n for n in names if n not in inputs]
    if missing:
        raise PlanError(f"missing input(s) {missing}; the plan takes {names}")
    unknown = sorted(set(inputs) - set(names))
    if unknown:
        raise PlanError(f"unknown input(s) {unknown}; the plan takes {names}")
    per_party: list[dict] = [{} for _ in range(WORLD_SIZE)]
    for b in bindings:
        value = np.asarray(inputs[b.name])
        if tuple(value.shape) != b.info.shape:
            raise PlanError(
                f"input {b.name!r} has shape {tuple(value.shape)}, the plan expects {b.info.shape}"
            )
        if b.info.dtype.startswith(("float", "bfloat")):
            value = value.astype(np.float64)
        shares = share_values(value, b.info.ring, b.info.dtype, rng)
        for rank in range(WORLD_SIZE):
            per_party[rank][b.name] = shares[rank]
    return per_party


# ---- a key/value cache of shares: local slot operations (no message) ------------------------


def pad_slots(share: AShare, slots: int) -> AShare:
    """``share`` (batch, slots, ...) padded along axis 1 to ``slots`` with zero shares (a
    valid sharing of 0 whatever the party: every component 0). Local, no message."""
    have = share.shape[1]
    if slots < have:
        raise PlanError(f"a cache of {have} slots cannot shrink to {slots}")
    if slots == have:
        return share
    pad = np.zeros((share.shape[0], slots - have) + share.shape[2:] + (2,), share.components.dtype)
    comps = np.concatenate([share.components, pad], axis=1)
    return AShare(share.ring, (share.shape[0], slots) + share.shape[2:], share.dtype, comps)


def write_slots(cache: AShare, new: AShare, start: int, count: int) -> AShare:
    """``cache`` with slots ``[start, start + count)`` replaced by the first ``count``
    positions (axis 1) of ``new``: this party's own components, written locally. The
    ring, the fixed-point encoding and the other axes must agree."""
    # (SPU reports a float output as float32 whatever its logical dtype: the ring and
    # fixed-point encoding are what must agree)
    if cache.ring != new.ring or is_fixed_point(cache.dtype) != is_fixed_point(new.dtype):
        raise PlanError(f"cannot write {new.ring} {new.dtype} values into a cache of {cache.ring} {cache.dtype}")
    if len(new.shape) != len(cache.shape) or new.shape[0] != cache.shape[0] or new.shape[2:] != cache.shape[2:]:
        raise PlanError(f"cannot write values of shape {new.shape} into a cache of shape {cache.shape}")
    if not (0 <= start and 0 <= count <= new.shape[1] and start + count <= cache.shape[1]):
        raise PlanError(
            f"slots [{start}, {start + count}) of {new.shape[1]} new positions do not fit a cache of {cache.shape[1]} slots"
        )
    comps = cache.components.copy()
    comps[:, start:start + count] = new.components[:, :count]
    return AShare(cache.ring, cache.shape, cache.dtype, comps)
