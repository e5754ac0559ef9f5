"""The operator process's heap: fewer malloc arenas, and freed pages handed back to the system.

CPython hands objects larger than 512 bytes (a stored object's compressed JSON, a watch event's
text) to the C allocator. glibc keeps one arena per thread that allocates, up to eight per core,
and gives an arena's freed pages back only at its top: an operator with dozens of threads (kopf's
executor, the watches, the refreshers) keeps its peak long after the objects are gone. Two
arenas (``mallopt(M_ARENA_MAX)``, what ``MALLOC_ARENA_MAX=2`` does) and a ``malloc_trim`` after a
store shrank a lot let RSS come back down. Elsewhere than glibc both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

M_ARENA_MAX = -8  # glibc malloc.h


@functools.cache
def _libc() -> Any | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "malloc_trim") or not hasattr(libc, "mallopt"):
        return None  # not glibc (musl has neither)
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc


def limit_arenas(n: int = 2) -> bool:
    """At most ``n`` malloc arenas (call before threads start); True where it took effect."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n) == 1)


def release() -> bool:
    """Give freed heap pages back to the system; True where some were."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0) == 1)
