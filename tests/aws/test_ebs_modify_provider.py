"""The EBS provider's ControllerModifyVolume part in process, against moto and the fault layer:
a modification still under way (EC2 runs one at a time) from another caller, or from our own
earlier attempt (a controller that restarted while it waited)."""

from __future__ import annotations

import pytest

from elastivol.domain import VolumeMode
from elastivol.errors import FailedPrecondition, Unavailable
from elastivol.params.block import parse_block_parameters
from elastivol.params.block_modify import parse_mutable, plan
from elastivol.providers.aws.controller.ebs import EbsProvider
from elastivol.providers.block import VolumeSpec
from elastivol.units import GiB
from tests.aws.support import ZONE_A, Moto, make_clients
from tests.support.aws_faults import FaultConfig


def test_a_modification_under_way_is_waited_for_or_refused_with_when(cluster: str, moto: Moto,
                                                                     aws_env: dict[str, str]) -> None:
    # The modification stays "modifying" for far longer than the provider waits.
    clients, _, _ = make_clients(FaultConfig(modifying_polls=10_000, modify_one_at_a_time=True),
                                 modify_timeout=1.0, modify_window=0.05)
    ebs = EbsProvider(clients, clients.settings, cluster_id=cluster, zones=[ZONE_A])
    v = ebs.create_volume(VolumeSpec(name="pvc-under-way", size_bytes=10 * GiB, zone=ZONE_A,
                                     params=parse_block_parameters({"type": "gp3"}), mode=VolumeMode.FILESYSTEM))

    def modify(**mutable: str) -> None:
        now = ebs.get_volume(v.id)
        ebs.apply_modification(v.id, plan(now.params, now.size_bytes // GiB, parse_mutable(mutable, now.params)))

    mark = moto.mark()
    with pytest.raises(Unavailable, match="still being modified"):
        modify(type="io2", iops="3000")
    # The same change again (our own attempt, under way): waited for, nothing new sent.
    with pytest.raises(Unavailable, match="still being modified"):
        modify(type="io2", iops="3000")
    # Another change while it runs: refused, saying the state and when the next change is possible.
    with pytest.raises(FailedPrecondition) as info:
        modify(type="io2", iops="4000")
    assert "already being modified (state modifying" in info.value.message
    assert "next change is possible from about" in info.value.message
    assert [r.action for r in moto.requests(mark) if r.action == "ModifyVolume"] == ["ModifyVolume"]
