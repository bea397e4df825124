"""The run's allocators, checked in fresh processes: glibc's arena count (malloc_info) and Arrow's pool."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

# What the allocator module sets in the environment: an earlier test's local Ray may have left them in this process's.
ALLOCATOR_VARIABLES = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "ARROW_DEFAULT_MEMORY_POOL")


def fresh_python(script: str, mode: str, **env: str) -> list[str]:
    """The words `script` prints, run with argument `mode` in a new interpreter whose environment holds none of
    ALLOCATOR_VARIABLES but those given in `env`."""
    clean = {k: v for k, v in os.environ.items() if k not in ALLOCATOR_VARIABLES}
    out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, check=True,
                         env={**clean, **env})
    return out.stdout.split()


COUNT_ARENAS = """
import ctypes, os, sys, tempfile, threading
from pipeline.inference.allocator import limit_malloc_arenas
capped = sys.argv[1] == "cap" and limit_malloc_arenas(2)
barrier = threading.Barrier(8)
def work():
    block = bytearray(1 << 16)  # from malloc, in this thread's arena
    barrier.wait()  # all eight alive at once: each asks for an arena of its own
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    stream = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    print(capped, open(f.name).read().count("<heap nr="), os.environ.get("MALLOC_ARENA_MAX", "-"))
"""


def arenas(mode: str, **env: str) -> tuple[str, int, str]:
    """(capped, glibc's arena count after 8 threads, MALLOC_ARENA_MAX as the process left it) of a fresh process."""
    capped, count, variable = fresh_python(COUNT_ARENAS, mode, **env)
    return capped, int(count), variable


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the cap is glibc's mallopt(M_ARENA_MAX)")
def test_threads_share_at_most_two_arenas_once_capped():
    assert arenas("cap") == ("True", 2, "2")  # and the processes it starts (a local Ray's) get the variable
    capped, uncapped, variable = arenas("none")
    assert capped == "False" and uncapped > 2 and variable == "-"  # without it the threads get arenas of their own


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_ARENA_MAX is glibc's")
def test_a_process_started_with_the_variable_is_capped_from_its_start():
    assert arenas("none", MALLOC_ARENA_MAX="2")[1] == 2


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="MALLOC_ARENA_MAX is glibc's")
def test_an_arena_count_the_environment_names_is_kept():
    assert arenas("cap", MALLOC_ARENA_MAX="4") == ("False", 4, "4")  # not lowered to 2


ARROW_POOLS = """
import subprocess, sys
import pyarrow as pa
from pipeline.inference.allocator import use_system_arrow_pool
here = use_system_arrow_pool() if sys.argv[1] == "use" else pa.default_memory_pool().backend_name
child = subprocess.run([sys.executable, "-c", "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(here, child)
"""


def arrow_pools(mode: str, **env: str) -> list[str]:
    """[the pool of a fresh process (after use_system_arrow_pool with mode "use"), the pool of a process it starts]."""
    return fresh_python(ARROW_POOLS, mode, **env)


def test_arrow_buffers_come_from_malloc_here_and_in_the_processes_started_after():
    default, child_default = arrow_pools("none")
    assert default == child_default != "system"  # Arrow's own default (mimalloc in the wheels) without the call
    assert arrow_pools("use") == ["system", "system"]


def test_a_pool_the_environment_names_is_kept():
    import pyarrow as pa

    if "jemalloc" not in pa.supported_memory_backends():
        pytest.skip("this pyarrow has no jemalloc pool")
    assert arrow_pools("use", ARROW_DEFAULT_MEMORY_POOL="jemalloc") == ["jemalloc", "jemalloc"]


MMAPPED_AFTER_FREE = """
import ctypes, sys
from pipeline.inference.allocator import map_large_blocks
fixed = sys.argv[1] == "fixed" and map_large_blocks()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
libc.mallinfo2.restype = Info
libc.free(libc.malloc(1 << 20))  # a first large block: mmapped, and glibc may raise its threshold when it is freed
before = libc.mallinfo2().hblks
block = libc.malloc(1 << 20)
print(fixed, libc.mallinfo2().hblks - before)  # 1: the second block is mmapped; 0: it came from an arena
"""


def mmapped_after_free(mode: str) -> tuple[str, int]:
    fixed, mmapped = fresh_python(MMAPPED_AFTER_FREE, mode)
    return fixed, int(mmapped)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the threshold is glibc's mallopt(M_MMAP_THRESHOLD)")
def test_large_blocks_stay_mmapped_once_the_threshold_is_fixed():
    assert mmapped_after_free("fixed") == ("True", 1)  # given back to the system when freed
    assert mmapped_after_free("none") == ("False", 0)  # glibc's raised threshold: the block came from an arena
