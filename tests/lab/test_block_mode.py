"""Raw block volumes in the lab: volumeMode Block, volumeDevices at a devicePath."""

from __future__ import annotations

from pathlib import Path

from tests.lab.conftest import lab
from tests.lab.manifests import claim, device_pod, docs, wffc_class

CLAIM = docs(wffc_class("raw"), claim("raw-claim", "raw", "volumeMode: Block"))


def test_a_block_volume_is_a_device_in_the_pod_and_keeps_its_bytes(lab_dir: Path) -> None:
    dev = f"/dev/evraw{lab_dir.name[-6:].replace('_', '')}"
    lab(lab_dir, "apply", "-f", "-", input=docs(CLAIM, device_pod("writer", "raw-claim", dev)), check=True)
    lab(lab_dir, "wait", "pod/writer", "--for=jsonpath={.status.phase}=Running", "--timeout", "60", check=True)
    out = lab(lab_dir, "exec", "writer", "--", "sh", "-c",
              f"test -b {dev} && blockdev --getsize64 {dev} && printf elastivol | dd of={dev} conv=fsync 2>/dev/null",
              check=True).stdout.split()
    assert out == [str(1 << 30)]
    assert lab(lab_dir, "get", "pv", "-o", "jsonpath={.items[0].spec.volumeMode}").stdout == "Block"
    lab(lab_dir, "delete", "pod", "writer", check=True)
    assert not Path(dev).exists(), "the placeholder the lab made for the device goes with the pod"
    lab(lab_dir, "apply", "-f", "-", input=device_pod("reader", "raw-claim", dev), check=True)
    lab(lab_dir, "wait", "pod/reader", "--for=jsonpath={.status.phase}=Running", "--timeout", "60", check=True)
    read = lab(lab_dir, "exec", "reader", "--", "dd", f"if={dev}", "bs=9", "count=1", check=True).stdout
    assert read == "elastivol"
    lab(lab_dir, "delete", "pod", "reader", check=True)
