"""Redis protocol (RESP2) encoding of whole Arrow columns.

A bulk load sends one ``MSET`` per batch.  Formatting its arguments key by key in Python costs
more CPU than the server spends storing them, so the arguments are built column-wise with Arrow
compute kernels: the data buffer of a string array is the concatenation of its values, which is
exactly the byte string of consecutive protocol arguments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["command", "bulk_strings", "bulk_pairs", "concatenated", "key_text_array"]


def command(*args: bytes) -> bytes:
    """One command in the Redis protocol."""
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%b\r\n" % (len(a), a) for a in args])


def key_text_array(keys: pa.Array) -> pa.Array:
    """Integer or string keys as UTF-8 text (integers in decimal, as :func:`key_text` writes them)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_integer(keys.type):
        return pc.cast(keys, pa.string())
    if pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type):
        return keys
    raise TypeError(f"keys of type {keys.type}: expected integers or strings")


def _framed(values: pa.Array, *, prefix: str = "") -> list:
    import pyarrow as pa
    import pyarrow.compute as pc

    data = pc.binary_join_element_wise(prefix, values, "") if prefix else values
    return ["$", pc.cast(pc.binary_length(data), pa.string()), "\r\n", data, "\r\n"]


def bulk_strings(values: pa.Array, *, prefix: str = "") -> pa.Array:
    """Each value (with ``prefix``) as one protocol bulk string ``$<len>\\r\\n<bytes>\\r\\n``."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*_framed(values, prefix=prefix), "")


def bulk_pairs(keys: pa.Array, values: pa.Array, *, prefix: str = "") -> pa.Array:
    """``prefix + key`` and its value as two consecutive bulk strings, one element per pair."""
    import pyarrow.compute as pc

    return pc.binary_join_element_wise(*_framed(keys, prefix=prefix), *_framed(values), "")


def concatenated(values: pa.Array) -> memoryview:
    """All values of a string or binary array back to back, without copying."""
    import numpy as np
    import pyarrow as pa

    offset_type = np.int64 if pa.types.is_large_string(values.type) or pa.types.is_large_binary(values.type) \
        else np.int32
    _, offsets, data = values.buffers()[:3]
    bounds = np.frombuffer(offsets, dtype=offset_type, count=len(values) + 1, offset=values.offset *
                           np.dtype(offset_type).itemsize)
    if data is None:
        return memoryview(b"")
    return memoryview(data)[int(bounds[0]):int(bounds[-1])]
