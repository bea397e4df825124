"""The run's allocators, so that a long run's processes keep flat memory: glibc's malloc with at most MALLOC_ARENAS
arenas, Arrow's buffers from that malloc (its "system" pool) rather than from the mimalloc Arrow bundles, and in the
driver a fixed mmap threshold (`map_large_blocks`), so that large blocks freed go back to the system.

glibc gives each new thread its own arena, up to 8 per core, and an arena keeps the memory its thread freed. The
driver's native threads (Ray's core worker and Ray Data's executor, dozens of them) allocate and free small buffers
for every block, so with many arenas the driver's private memory grew with the run while what it had in use stayed
flat; with 2 arenas the freed memory is reused (the figures: benchmarks/README.md, "Catalogue scale"). This is
`MALLOC_ARENA_MAX=2` set from inside the process, for a driver that `ray job submit` starts without that variable;
the variable itself is set for the processes started after it (a local Ray's GCS, raylet and workers, whose task
workers live through the run), and infra/runtime_env.yaml sets it for a cluster's workers.

Arrow's default pool, mimalloc, keeps the pages it freed in the process's private memory (it gives them back with
MADV_FREE, which the kernel reclaims only under pressure): a task worker that read a segment's plan stayed larger
for the rest of the run. The choice is the variable ARROW_DEFAULT_MEMORY_POOL, which Arrow reads when a process
first allocates: set here for the processes started from now on unless the environment already names a pool (and in
infra/runtime_env.yaml), and applied to this process through `pyarrow.set_memory_pool`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from collections.abc import Callable

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
ARROW_POOL = "system"
MMAP_THRESHOLD = 128 << 10  # glibc's own starting value
M_ARENA_MAX, M_MMAP_THRESHOLD = -8, -3  # mallopt's parameter numbers in glibc's malloc.h


def bound_allocators() -> None:
    """The driver's choices: call before Ray starts (`limit_malloc_arenas`). The arena cap and Arrow's pool also hold
    for the processes it starts; the fixed mmap threshold only here (`map_large_blocks`)."""
    limit_malloc_arenas()
    map_large_blocks()
    use_system_arrow_pool()


def map_large_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """malloc's blocks of `threshold` bytes and more from mmap, given back to the system when freed, now and later.

    glibc starts with that threshold (128 KiB) but raises it to the size of each mmapped block freed, up to 32 MiB:
    after that, large blocks come from the arenas, and memory they leave free stays in the process. Validating a
    pairs manifest of 1M pairs (batches of digests, then their sort) left the driver 47 MiB larger that way, 8-9 MiB
    with the threshold fixed. Setting it stops the raising. In the driver only: processes that allocate large blocks
    in a loop (the model's CPU tensors) would pay a page fault per page each time. False where glibc is not there,
    or where MALLOC_MMAP_THRESHOLD_ set a threshold already (glibc follows it, fixed, from the process's start)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    mallopt = _glibc_mallopt()
    return mallopt is not None and mallopt(M_MMAP_THRESHOLD, threshold) == 1


def use_system_arrow_pool() -> str:
    """Arrow's buffers from malloc in this process and in the processes it starts from now on, unless the
    environment names another pool (then that one is kept, here too). Returns the pool this process now uses."""
    import pyarrow as pa

    chosen = os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", ARROW_POOL)
    if chosen == ARROW_POOL:
        pa.set_memory_pool(pa.system_memory_pool())  # buffers already allocated stay with the pool they came from
    return pa.default_memory_pool().backend_name


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's arenas for the threads created from now on (threads that already have one keep it: call this
    before Ray starts), and for the processes this one starts from now on, unless the environment already says.
    Returns whether this call set this process's cap: False where MALLOC_ARENA_MAX was already set (glibc read it
    when the process started, and follows it) or the C library is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    os.environ["MALLOC_ARENA_MAX"] = str(arenas)  # read by glibc when a new process starts
    mallopt = _glibc_mallopt()
    return mallopt is not None and mallopt(M_ARENA_MAX, arenas) == 1


def _glibc_mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None under another C library (whose parameter numbers differ) or none found."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return None
    if not hasattr(libc, "gnu_get_libc_version"):
        return None
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt
