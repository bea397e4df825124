"""A local multi-node Ray cluster on one machine, for node-failure tests: `ray start` processes we own by PID.

The head node has no GPU (as on the real cluster, where the head is CPU-only); GPU worker nodes are added and
killed one by one. Each node is one `ray start --block` process in its own session, so SIGKILL of its process
group kills the node's raylet and every worker process on it at once, as a lost machine would. Token auth is off
and every port is chosen free on 127.0.0.1, so the cluster touches nothing outside and nothing it did not start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RAY = str(Path(sys.executable).with_name("ray"))
# Fast node-death detection (defaults take ~30 s): the GCS checks each raylet every 500 ms, dead after 4 misses.
FAST_HEALTH = {"RAY_health_check_initial_delay_ms": "0", "RAY_health_check_period_ms": "500",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_failure_threshold": "4"}

_ALIVE = """
import json, sys, time
from ray._raylet import GcsClient
client = GcsClient(address=sys.argv[1])
want, deadline = int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    nodes = client.get_all_node_info()
    alive = sorted(json.dumps({"gpu": i.resources_total.get("GPU", 0)}) for i in nodes.values() if i.state == 0)
    if len(alive) == want or time.monotonic() > deadline:
        print(json.dumps({"alive": len(alive), "nodes": alive}))
        break
    time.sleep(0.2)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalCluster:
    def __init__(self, head_cpus: int = 2) -> None:
        # Short path: Ray's unix sockets live under it and must stay below 108 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rr-", dir="/tmp")
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", **FAST_HEALTH}
        self.env.pop("RAY_ADDRESS", None)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[subprocess.Popen] = []
        self.head = self._start(["--head", f"--port={self.port}", f"--num-cpus={head_cpus}", "--num-gpus=0",
                                 "--include-dashboard=false", f"--temp-dir={self.temp_dir}",
                                 f"--ray-client-server-port={free_port()}"], "head")

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = open(Path(self.temp_dir) / f"{name}-{len(self.nodes)}.log", "wb")  # noqa: SIM115 - the node owns it
        proc = subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.nodes.append(proc)
        return proc

    def add_gpu_node(self, cpus: int = 1) -> subprocess.Popen:
        return self._start([f"--address={self.address}", f"--num-cpus={cpus}", "--num-gpus=1"], "gpu")

    def wait_alive(self, count: int, timeout: float = 60.0) -> dict:
        """Block until exactly `count` nodes are alive in the GCS; returns what it saw."""
        out = subprocess.run([sys.executable, "-c", _ALIVE, self.address, str(count), str(timeout)], env=self.env,
                             capture_output=True, text=True, timeout=timeout + 30)
        assert out.returncode == 0, out.stderr[-3000:]
        seen = json.loads(out.stdout.strip().splitlines()[-1])
        assert seen["alive"] == count, f"{seen} after {timeout}s; logs in {self.temp_dir}"
        return seen

    def kill_node(self, proc: subprocess.Popen) -> None:
        """SIGKILL the node's whole process group: its raylet, object store and every worker on it."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def shutdown(self) -> None:
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        time.sleep(0.5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
