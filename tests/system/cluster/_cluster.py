"""A real two-node Ray cluster on this machine, with the dashboard and job server, like the g5 cluster in miniature.

The head advertises CPU 0 and no GPU (as in ray_cluster.yaml), so it runs only the control plane, the dashboard/job
server and the job drivers; the worker node has 2 CPUs and 1 (fake) GPU, so every task and actor lands there. Each
node is one `ray start --block` process in its own session, started here; shutdown ends exactly those processes and
their descendants, by PID. It never runs `ray stop`, which would kill every Ray process on the machine, including
other users' clusters. Token auth is off and every port is a free one on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of a live process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[19]


def descendants(roots: list[int]) -> dict[int, str]:
    """Every live descendant of `roots` (and the roots), as pid -> start time (to never signal a reused pid)."""
    parents: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info:
                parents.setdefault(info[0], []).append(int(entry))
                starts[int(entry)] = info[1]
    found: dict[int, str] = {}
    todo = [p for p in roots if p in starts]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = starts[pid]
            todo += parents.get(pid, [])
    return found


class DashboardCluster:
    def __init__(self, temp_root: str = "/tmp") -> None:
        # Short path: Ray's unix sockets live under it and must stay below 108 characters.
        self.temp_dir = tempfile.mkdtemp(prefix="rc-", dir=temp_root)
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # `python` in entrypoints: this venv
        self.env.pop("RAY_ADDRESS", None)
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.dashboard = f"http://127.0.0.1:{self.dashboard_port}"
        self.nodes: list[subprocess.Popen] = []

    def start(self) -> DashboardCluster:
        self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0", "--num-gpus=0",
                             "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                             f"--dashboard-port={self.dashboard_port}", f"--temp-dir={self.temp_dir}",
                             f"--ray-client-server-port={free_port()}"])
        self.wait_ready(alive_nodes=1)  # the GPU node joins a head that is up, not one still booting
        self._start("gpu", [f"--address={self.address}", "--num-cpus=2", "--num-gpus=1"])
        try:
            self.wait_ready()
        except AssertionError:
            # Ray gives a joining raylet a fixed 30 s to register; a loaded 2-core machine can miss it. Once more.
            if self.nodes[-1].poll() is None:
                raise
            self.nodes.pop()
            self._start("gpu-retry", [f"--address={self.address}", "--num-cpus=2", "--num-gpus=1"])
            self.wait_ready()
        return self

    def _start(self, name: str, args: list[str]) -> None:
        log = open(Path(self.temp_dir) / f"{name}.log", "wb")  # noqa: SIM115 - the node owns it
        self.nodes.append(subprocess.Popen(
            [RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
             f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
             f"--metrics-export-port={free_port()}", f"--runtime-env-agent-port={free_port()}", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        ))

    def ray(self, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
        """The real `ray` CLI against this cluster's job server."""
        out = subprocess.run([RAY, *args], env=self.env, capture_output=True, text=True, timeout=timeout)
        assert not check or out.returncode == 0, f"ray {' '.join(args)}: {out.stdout[-3000:]}{out.stderr[-3000:]}"
        return out

    def nodes_info(self) -> list[dict]:
        out = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json", check=True)
        return json.loads(out.stdout)

    def wait_ready(self, timeout: float = 120, alive_nodes: int = 2) -> None:
        """`alive_nodes` nodes alive and the job server answering."""
        deadline = time.monotonic() + timeout
        while True:
            for proc in self.nodes:
                assert proc.poll() is None, f"a node exited; logs in {self.temp_dir}: {self.log_tail()}"
            out = self.ray("list", "nodes", "--address", self.dashboard, "--format", "json", timeout=60)
            if out.returncode == 0 and out.stdout.lstrip().startswith("["):  # else "No resource in the cluster"
                alive = [n for n in json.loads(out.stdout) if n.get("state") == "ALIVE"]
                if len(alive) == alive_nodes and self.ray("job", "list", "--address", self.dashboard).returncode == 0:
                    return
            assert time.monotonic() < deadline, f"cluster not ready after {timeout}s: {self.log_tail()}"
            time.sleep(1)

    def log_tail(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-2000:] for p in Path(self.temp_dir).glob("*.log"))

    def shutdown(self) -> None:
        """SIGTERM each node's `ray start --block` (it stops its raylet, GCS, dashboard, workers), then SIGKILL
        whatever of its process tree is left (job drivers run in sessions of their own). Only our PIDs."""
        tree = descendants([p.pid for p in self.nodes])
        for proc in reversed(self.nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
        for pid, started in tree.items():
            info = _stat(pid)
            if info and info[1] == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        for proc in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
