"""glibc's malloc in the driver: at most MALLOC_ARENAS arenas, so that a long run's driver memory stays flat.

glibc gives each new thread its own arena, up to 8 per core, and an arena keeps the memory its thread freed. The
driver's native threads (Ray's core worker and Ray Data's executor, over 30 of them) allocate and free small buffers
for every block; with 16 arenas on 2 cores the driver's private memory grew by about 0.5 KiB a pair while what it
had in use stayed flat (benchmarks/README.md, "Catalogue scale"). With 2 arenas the freed memory is reused. This is
`MALLOC_ARENA_MAX=2` set from inside the process, for a driver that `ray job submit` starts without that variable;
the variable itself is set for the processes started after it (a local Ray's GCS, raylet and workers, whose task
workers live through the run), and infra/runtime_env.yaml sets it for a cluster's workers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

MALLOC_ARENAS = 2
M_ARENA_MAX = -8  # mallopt's parameter number in glibc's malloc.h


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's arenas for the threads created from now on (threads that already have one keep it: call this
    before Ray starts), and for the processes this one starts from now on, unless the environment already says.
    Returns whether this process's cap was set; False where the C library is not glibc."""
    os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))  # read by glibc when a new process starts
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
