"""The lab survives a crash of its own processes: a SIGKILLed daemon, then `lab up` again."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from tests.lab.conftest import ROOT, lab
from tests.lab.manifests import claim, docs, mount_pod, wffc_class


def _wait(directory: Path, *args: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        result = lab(directory, *args)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
        if time.monotonic() > deadline:
            raise AssertionError(f"`lab {' '.join(args)}` gave nothing within {timeout}s: {result.stderr}")
        time.sleep(0.3)


def test_killed_daemon_is_replaced_and_pods_keep_their_data(lab_dir: Path) -> None:
    lab(lab_dir, "apply", "-f", str(ROOT / "examples" / "01-ebs-dynamic"), check=True)
    lab(lab_dir, "wait", "pod/app", "--for=jsonpath={.status.phase}=Running", "--timeout", "60", check=True)
    lab(lab_dir, "exec", "app", "--", "sh", "-c", "head -c 1048576 /dev/urandom > /data/blob && sync", check=True)
    before = lab(lab_dir, "exec", "app", "--", "sha256sum", "/data/blob", check=True).stdout.split()[0]
    old_daemon = int((lab_dir / "daemon.pid").read_text())
    old_plugins = set(_plugin_pids(lab_dir))
    assert old_plugins, "the lab records its plugin processes"

    os.kill(old_daemon, signal.SIGKILL)
    up = lab(lab_dir, "up", check=True)
    assert "lab up" in up.stderr
    assert int((lab_dir / "daemon.pid").read_text()) != old_daemon
    # The dead daemon's plugins held the sockets; the new daemon retired them and runs its own.
    assert not old_plugins & set(_plugin_pids(lab_dir))
    assert all(not Path(f"/proc/{pid}").exists() for pid in old_plugins)
    assert _wait(lab_dir, "get", "pod", "app", "-o", "jsonpath={.status.phase}") == "Running"
    after = lab(lab_dir, "exec", "app", "--", "sha256sum", "/data/blob", check=True).stdout.split()[0]
    assert after == before
    # And the control loops work again: a new claim is provisioned and bound.
    lab(lab_dir, "patch", "pvc", "ebs-claim", "-p", '{"spec":{"resources":{"requests":{"storage":"5Gi"}}}}',
        check=True)
    lab(lab_dir, "wait", "pvc/ebs-claim", "--for=jsonpath={.status.capacity.storage}=5Gi", "--timeout", "60",
        check=True)


def _plugin_pids(directory: Path) -> list[int]:
    import json

    status = json.loads((directory / "status.json").read_text())
    return [int(p["pid"]) for p in status["processes"].values()]


def _shared_path_pods(path: Path) -> str:
    """Two claims, and a pod for each that mounts it at ``path`` and writes its own name there."""
    pods = [mount_pod(f"mp-{who}", f"mp-{who}", str(path), f"echo {who} > {path}/who; sleep 600")
            for who in ("one", "two")]
    return docs(wffc_class("mp"), claim("mp-one", "mp"), claim("mp-two", "mp"), *pods)


def test_deleting_one_pod_keeps_another_pods_volume_at_the_same_mount_path(lab_dir: Path) -> None:
    # Both pods bind their volumes at one host path that the lab creates. If the first pod's
    # teardown removed that directory, the kernel would detach the second pod's bind too, and it
    # would go on writing into the host's directory instead of its volume.
    path = Path("/var/tmp") / f"evmp-{lab_dir.name}" / "data"
    lab(lab_dir, "apply", "-f", "-", input=_shared_path_pods(path), check=True)
    for pod in ("mp-one", "mp-two"):
        lab(lab_dir, "wait", f"pod/{pod}", "--for=jsonpath={.status.phase}=Running", "--timeout", "60", check=True)
    assert path.is_dir()
    lab(lab_dir, "delete", "pod", "mp-one", check=True)
    assert path.is_dir(), "the mount point went while mp-two still uses it"
    probe = f"grep -c ' {path} ' /proc/self/mountinfo; cat {path}/who; touch {path}/after"
    out = lab(lab_dir, "exec", "mp-two", "--", "sh", "-c", probe, check=True).stdout.split()
    assert out == ["1", "two"], f"mp-two no longer sees its own volume at {path}: {out}"
    assert not (path / "after").exists(), "mp-two wrote into the host's directory, not its volume"
    lab(lab_dir, "delete", "pod", "mp-two", check=True)
    assert not path.parent.exists(), "the lab removes the mount point it created once no pod uses it"
