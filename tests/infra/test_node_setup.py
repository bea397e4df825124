"""The NVMe/model-cache initialization command of ray_cluster.yaml, run for real against stand-in commands.

`sudo`, `mountpoint`, `lsblk` and `systemctl` are replaced by small scripts: nothing is mounted or formatted, the
privileged commands the script would run are recorded, and /sys/block is replaced by a sample tree.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CACHE = "/mnt/nvme/tryall-model-cache"

STUBS = {
    # Record what would run as root instead of running it.
    "sudo": 'echo "$*" >> "$SUDO_LOG"\n',
    # mountpoint -q PATH: mounted when PATH is listed in $FAKE_MOUNTED.
    "mountpoint": 'for m in $FAKE_MOUNTED; do [ "$m" = "$2" ] && exit 0; done\nexit 1\n',
    # lsblk -no MOUNTPOINT DEV: a mount point for the devices listed in $FAKE_BUSY.
    "lsblk": 'for d in $FAKE_BUSY; do [ "$d" = "$3" ] && echo /somewhere; done\nexit 0\n',
    "systemctl": "exit 0\n",
}


def init_script() -> str:
    return yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())["initialization_commands"][0]


@pytest.fixture
def node(tmp_path):
    """Runs the init script with stubs and a fake /sys/block; returns (returncode, stdout, root commands)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in STUBS.items():
        (bin_dir / name).write_text("#!/usr/bin/env bash\n" + body)
        (bin_dir / name).chmod(0o755)
    sys_block = tmp_path / "sys" / "block"
    sys_block.mkdir(parents=True)
    log = tmp_path / "sudo.log"

    def disk(name: str, model: str, holders: tuple[str, ...] = ()) -> None:
        (sys_block / name / "device").mkdir(parents=True)
        (sys_block / name / "device" / "model").write_text(model + "\n")
        (sys_block / name / "holders").mkdir()
        for holder in holders:
            (sys_block / name / "holders" / holder).write_text("")

    def run(mounted: str = "", busy: str = ""):
        script = init_script().replace("/sys/block", str(sys_block))
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SUDO_LOG": str(log),
               "FAKE_MOUNTED": mounted, "FAKE_BUSY": busy}  # fmt: skip
        result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=30)
        commands = log.read_text().splitlines() if log.exists() else []
        return result.returncode, result.stdout, commands

    run.disk = disk
    return run


def ends_with_the_cache(commands: list[str]) -> bool:
    return commands[-2:] == [f"mkdir -p {CACHE}", f"chown 1000:1000 {CACHE}"]


def test_formats_and_mounts_the_instance_store_disk_only(node):
    node.disk("nvme0n1", "Amazon Elastic Block Store")
    node.disk("nvme1n1", "Amazon EC2 NVMe Instance Storage")
    code, out, commands = node()
    assert code == 0, out
    assert commands[:3] == ["mkfs.ext4 -q -F -m 0 -E nodiscard /dev/nvme1n1", "mkdir -p /mnt/nvme",
                            "mount -o noatime /dev/nvme1n1 /mnt/nvme"]  # fmt: skip
    assert not [c for c in commands if "nvme0n1" in c], "never touch the EBS root disk"
    assert ends_with_the_cache(commands)


def test_uses_the_amis_own_instance_store_mount(node):
    node.disk("nvme1n1", "Amazon EC2 NVMe Instance Storage", holders=("md0",))
    code, out, commands = node(mounted="/opt/dlami/nvme")
    assert code == 0, out
    assert "mount --bind /opt/dlami/nvme /mnt/nvme" in commands
    assert not [c for c in commands if c.startswith("mkfs")]
    assert ends_with_the_cache(commands)


def test_is_idempotent_once_mounted(node):
    node.disk("nvme1n1", "Amazon EC2 NVMe Instance Storage")
    code, out, commands = node(mounted="/mnt/nvme")
    assert code == 0, out
    assert commands == [f"mkdir -p {CACHE}", f"chown 1000:1000 {CACHE}"]


@pytest.mark.parametrize("case", ["no_disks", "raid_member", "already_mounted_elsewhere"])
def test_falls_back_to_the_root_volume(node, case):
    if case == "raid_member":
        node.disk("nvme1n1", "Amazon EC2 NVMe Instance Storage", holders=("md0",))
    elif case == "already_mounted_elsewhere":
        node.disk("nvme1n1", "Amazon EC2 NVMe Instance Storage")
    node.disk("nvme0n1", "Amazon Elastic Block Store")
    code, out, commands = node(busy="/dev/nvme1n1" if case == "already_mounted_elsewhere" else "")
    assert code == 0, out
    assert "model cache stays on the root volume" in out
    assert commands == [f"mkdir -p {CACHE}", f"chown 1000:1000 {CACHE}"]


def test_cache_path_is_the_same_everywhere():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    assert f"CACHE={CACHE}\n" in init_script()
    assert f"-v {CACHE}:{CACHE}" in config["docker"]["run_options"]
    runtime_env = yaml.safe_load((ROOT / "infra" / "runtime_env.yaml").read_text())
    assert runtime_env["env_vars"]["TRYALL_MODEL_CACHE_DIR"] == CACHE
    assert f"TRYALL_MODEL_CACHE_DIR={CACHE}" in (ROOT / "infra" / "Dockerfile").read_text()


def test_all_node_commands_parse_as_bash():
    config = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    commands = config["initialization_commands"] + config["setup_commands"]
    commands += config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    for node_type in config["available_node_types"].values():
        commands += node_type.get("worker_setup_commands", [])
    for command in commands:
        subprocess.run(["bash", "-n", "-c", command], check=True, timeout=10)
