"""The run's allocators, so that a long run's processes keep flat memory: glibc's malloc with at most MALLOC_ARENAS
arenas, and Arrow's buffers from that malloc (its "system" pool) rather than from the mimalloc Arrow bundles.

glibc gives each new thread its own arena, up to 8 per core, and an arena keeps the memory its thread freed. The
driver's native threads (Ray's core worker and Ray Data's executor, over 30 of them) allocate and free small buffers
for every block; with 16 arenas on 2 cores the driver's private memory grew by about 0.5 KiB a pair while what it
had in use stayed flat (benchmarks/README.md, "Catalogue scale"). With 2 arenas the freed memory is reused. This is
`MALLOC_ARENA_MAX=2` set from inside the process, for a driver that `ray job submit` starts without that variable;
the variable itself is set for the processes started after it (a local Ray's GCS, raylet and workers, whose task
workers live through the run), and infra/runtime_env.yaml sets it for a cluster's workers.

Arrow's default pool, mimalloc, keeps the pages it freed in the process's private memory (it gives them back with
MADV_FREE, which the kernel reclaims only under pressure): the task worker that reads a segment's plan (about 50k
pairs, 13 Parquet parts) stayed 130 MiB larger for the rest of the run, which the memory bench counted as worker
growth (1.95x the 1k run at 100k pairs). With the system pool the same read leaves it 35 MiB larger. The choice is
the variable ARROW_DEFAULT_MEMORY_POOL, which Arrow reads when a process first allocates: set here for the
processes started from now on unless the environment already names a pool (and in infra/runtime_env.yaml), and
applied to this process through `pyarrow.set_memory_pool`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
ARROW_POOL = "system"
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def bound_allocators() -> None:
    """Both choices, for this process and the processes it starts: call before Ray starts (`limit_malloc_arenas`)."""
    limit_malloc_arenas()
    use_system_arrow_pool()


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
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):
        return False  # another C library's mallopt: its parameter numbers differ
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_ARENA_MAX, arenas) == 1
