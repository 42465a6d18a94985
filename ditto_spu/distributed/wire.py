"""The control channel's message format: a schema, never pickle.

A peer that can reach a node's control port must not be able to run code there, so no
message is ever unpickled. The connection (:mod:`.channel`: TLS when the deployment
enables it, an HMAC challenge on the deployment's key) authenticates the peer; messages
travel as length-prefixed frames (``send_bytes`` / ``recv_bytes``), encoded here::

    [8-byte big-endian header length][header: UTF-8 JSON][buffer 0][buffer 1]...

The header is the message with every array replaced by a reference to a buffer:

* ``{"$array": i, "dtype": "<u8", "shape": [..]}`` — a numpy array (dtypes from
  :data:`ARRAY_DTYPES` only);
* ``{"$bytes": i}`` — a byte string (e.g. a serialized Plan, itself JSON);
* ``{"$ashare": {"ring": "FXP32[f=8]", "dtype": "float16", "shape": [..], "components": <array>}}``
  — one party's share, rebuilt and validated by :class:`~ditto_spu.shares.AShare`;
* ``{"$step": {...}}`` — a :class:`~ditto_spu.mpc.runtime.StepStats` (known fields only).

and a top-level ``"buffers"`` list with every buffer's byte length, in order.
:func:`decode` checks all of it — top-level ``type`` against what the receiver expects,
dtypes, shapes against lengths, the lengths against the bytes received, keys starting
with ``$`` — and raises :class:`WireError` naming what is wrong; the receiver logs it and
keeps serving. Sizes are bounded: :func:`recv_message` refuses a message over
``max_bytes`` before reading it (the channel's ``recv_bytes(maxlength)``) and a header over
:data:`MAX_HEADER_BYTES`.

Message types (:data:`MESSAGE_TYPES`; the fields each handler checks are documented where
it is handled: :mod:`.node`, :mod:`.service`, :mod:`.driver`): requests ``hello``,
``shutdown``, ``run``, ``list_models``, ``model_info``, ``upload_begin``, ``query``; in an
upload ``upload_chunk`` (shares of at most :data:`~.service.CHUNK_BYTES`, large weights
split along their first axis) and ``upload_commit``; around a run ``admitted``,
``start``, ``abort``, ``result``, ``release``; answers ``ready``, ``stored``, ``models``,
``bye``, ``error``; multi-step sessions (:mod:`.sessions`) ``open_session`` → ``session``
and ``close_session`` → ``closed``. A store file (:mod:`.store`) is one ``stored_model`` message.
"""

from __future__ import annotations

import dataclasses
import json
import math
import struct

import numpy as np

from ..errors import DittoError
from ..mpc.runtime import StepStats
from ..rings import RingSpec
from ..shares import AShare

MAX_HEADER_BYTES = 64 << 20
ARRAY_DTYPES = {"|u1", "|i1", "|b1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8"}
_LEN = struct.Struct(">Q")


MESSAGE_TYPES = frozenset({
    "hello", "shutdown", "run", "list_models", "model_info", "upload_begin", "query",
    "upload_chunk", "upload_commit", "admitted", "start", "abort", "result", "release",
    "ready", "stored", "models", "bye", "error", "stored_model",
    "open_session", "session", "close_session", "closed",
})


class WireError(DittoError):
    """A control message that does not follow the schema (or is too large)."""


# ---- encoding -------------------------------------------------------------------------------


def encode(message: dict) -> bytes:
    """``message`` (a dict with a ``type``) as one byte string."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise WireError(f"a control message is a dict with a string 'type', got {type(message).__name__}")
    if message["type"] not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {message['type']!r}")
    buffers: list = []
    header = _encode_value(message, buffers, "message")
    header["buffers"] = [len(b) for b in buffers]
    text = json.dumps(header, allow_nan=True).encode()
    return b"".join([_LEN.pack(len(text)), text, *buffers])


def _encode_value(x, buffers: list, where: str):
    if x is None or isinstance(x, (bool, str)):
        return x
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x)
    if isinstance(x, AShare):
        return {"$ashare": {"ring": str(x.ring), "dtype": x.dtype, "shape": list(x.shape),
                            "components": _encode_value(x.components, buffers, where)}}
    if isinstance(x, StepStats):
        return {"$step": _encode_value(dataclasses.asdict(x), buffers, where)}
    if isinstance(x, np.ndarray):
        arr = np.ascontiguousarray(x)
        if arr.dtype.str not in ARRAY_DTYPES:
            raise WireError(f"{where}: arrays of dtype {arr.dtype} are not sent on the control channel")
        buffers.append(arr.tobytes())
        return {"$array": len(buffers) - 1, "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(x, (bytes, bytearray, memoryview)):
        buffers.append(bytes(x))
        return {"$bytes": len(buffers) - 1}
    if isinstance(x, dict):
        out = {}
        for k, v in x.items():
            if not isinstance(k, str) or k.startswith("$") or k == "buffers" and where == "message":
                raise WireError(f"{where}: key {k!r} is not allowed (string keys, no '$' prefix)")
            out[k] = _encode_value(v, buffers, f"{where}.{k}")
        return out
    if isinstance(x, (list, tuple)):
        return [_encode_value(v, buffers, f"{where}[{i}]") for i, v in enumerate(x)]
    raise WireError(f"{where}: values of type {type(x).__name__} are not sent on the control channel")


# ---- decoding -------------------------------------------------------------------------------


def decode(raw: bytes, expected_types=None) -> dict:
    """The message in ``raw``; :class:`WireError` if anything is off. ``expected_types``:
    the message types the receiver accepts (None: any)."""
    data = memoryview(raw)
    if len(data) < _LEN.size:
        raise WireError(f"message of {len(data)} bytes is shorter than its length field")
    (n,) = _LEN.unpack(data[: _LEN.size])
    if n > MAX_HEADER_BYTES or _LEN.size + n > len(data):
        raise WireError(f"header length {n} does not fit the message ({len(data)} bytes, limit {MAX_HEADER_BYTES})")
    try:
        header = json.loads(bytes(data[_LEN.size : _LEN.size + n]).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WireError(f"header is not JSON: {e}") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WireError("a message header is a JSON object with a string 'type'")
    if expected_types is not None and header["type"] not in expected_types:
        raise WireError(f"unexpected message type {header['type'][:64]!r}; expected one of {sorted(expected_types)}")
    if header["type"] not in MESSAGE_TYPES:
        raise WireError(f"unknown message type {header['type'][:64]!r}")
    sizes = header.pop("buffers", None)
    if not isinstance(sizes, list) or not all(isinstance(s, int) and s >= 0 for s in sizes):
        raise WireError("header 'buffers' must list non-negative byte lengths")
    if _LEN.size + n + sum(sizes) != len(data):
        raise WireError(f"buffers declare {sum(sizes)} bytes, the message carries {len(data) - _LEN.size - n}")
    offsets, pos = [], _LEN.size + n
    for s in sizes:
        offsets.append(pos)
        pos += s
    buffers = [data[o : o + s] for o, s in zip(offsets, sizes)]
    used: set = set()
    message = _decode_value(header, buffers, used, "message")
    if len(used) != len(buffers):
        raise WireError(f"{len(buffers) - len(used)} buffer(s) are not referenced by the header")
    return message


def _buffer(ref, buffers, used, where):
    if not isinstance(ref, int) or isinstance(ref, bool) or not 0 <= ref < len(buffers) or ref in used:
        raise WireError(f"{where}: buffer reference {ref!r} is invalid or used twice")
    used.add(ref)
    return buffers[ref]


def _decode_value(x, buffers, used, where):
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_decode_value(v, buffers, used, f"{where}[{i}]") for i, v in enumerate(x)]
    if not isinstance(x, dict):
        raise WireError(f"{where}: unexpected JSON value {type(x).__name__}")
    tags = [k for k in x if k.startswith("$")]
    if not tags:
        return {k: _decode_value(v, buffers, used, f"{where}.{k}") for k, v in x.items()}
    if len(tags) != 1:
        raise WireError(f"{where}: more than one '$' tag ({tags})")
    tag = tags[0]
    if tag == "$array":
        return _decode_array(x, buffers, used, where)
    if tag == "$bytes":
        if set(x) != {"$bytes"}:
            raise WireError(f"{where}: a $bytes entry has no other keys")
        return bytes(_buffer(x["$bytes"], buffers, used, where))
    if tag == "$ashare":
        return _decode_share(x, buffers, used, where)
    if tag == "$step":
        return _decode_step(x, buffers, used, where)
    raise WireError(f"{where}: unknown tag {tag!r}")


def _decode_array(x, buffers, used, where):
    if set(x) != {"$array", "dtype", "shape"}:
        raise WireError(f"{where}: an array entry has exactly $array, dtype and shape")
    dtype, shape = x["dtype"], x["shape"]
    if dtype not in ARRAY_DTYPES:
        raise WireError(f"{where}: dtype {dtype!r} is not accepted")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise WireError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    buf = _buffer(x["$array"], buffers, used, where)
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != len(buf):
        raise WireError(f"{where}: shape {shape} of {dtype} needs {math.prod(shape) * dt.itemsize} bytes, got {len(buf)}")
    return np.frombuffer(buf, dt).reshape(shape).copy()


def _decode_share(x, buffers, used, where):
    body = x["$ashare"]
    if set(x) != {"$ashare"} or not isinstance(body, dict) or set(body) != {"ring", "dtype", "shape", "components"}:
        raise WireError(f"{where}: a share has exactly ring, dtype, shape and components")
    if not isinstance(body["ring"], str) or not isinstance(body["dtype"], str) or not isinstance(body["shape"], list):
        raise WireError(f"{where}: malformed share fields")
    components = _decode_value(body["components"], buffers, used, f"{where}.components")
    if not isinstance(components, np.ndarray):
        raise WireError(f"{where}: share components must be an array")
    try:
        return AShare(RingSpec.parse(body["ring"]), tuple(body["shape"]), body["dtype"], components)
    except (DittoError, ValueError, TypeError) as e:
        raise WireError(f"{where}: invalid share: {e}") from None


def _decode_step(x, buffers, used, where):
    body = x["$step"]
    fields = {f.name for f in dataclasses.fields(StepStats)}
    if set(x) != {"$step"} or not isinstance(body, dict) or not set(body) <= fields:
        raise WireError(f"{where}: step stats take only the fields {sorted(fields)}")
    try:
        return StepStats(**_decode_value(body, buffers, used, where))
    except TypeError as e:
        raise WireError(f"{where}: invalid step stats: {e}") from None


# ---- over a connection ----------------------------------------------------------------------


def send_message(conn, message: dict) -> None:
    """Send ``message`` on an authenticated :class:`.channel.Connection`."""
    conn.send_bytes(encode(message))


def recv_message(conn, *, max_bytes: int, expected_types=None) -> dict:
    """Receive one message (at most ``max_bytes``); WireError if it breaks the schema or
    the limit. EOFError when the peer closed the connection."""
    return decode(conn.recv_bytes(max_bytes), expected_types)
