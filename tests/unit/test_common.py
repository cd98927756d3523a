from __future__ import annotations

import grpc
import pytest

from elastivol import errors
from elastivol.csi import csi_pb2
from elastivol.drivers.common import choose_zone, paginate, require_text
from elastivol.grpc_errors import status_for
from elastivol.units import parse_size


def req(requisite: list[str], preferred: list[str]) -> csi_pb2.TopologyRequirement:
    r = csi_pb2.TopologyRequirement()
    for z in requisite:
        r.requisite.add(segments={"topology.kubernetes.io/zone": z})
    for z in preferred:
        r.preferred.add(segments={"topology.elastivol.io/zone": z})
    return r


def test_zone_choice_prefers_preferred_then_requisite() -> None:
    served = ["a", "b", "c"]
    assert choose_zone(None, served) == "a"
    assert choose_zone(req(["b", "c"], ["c"]), served) == "c"
    assert choose_zone(req(["x", "b"], []), served) == "b"
    assert choose_zone(req([], ["b"]), served) == "b"
    with pytest.raises(errors.Exhausted, match="a, b, c"):
        choose_zone(req(["x"], ["y"]), served)


def test_pagination_survives_deletes_and_rejects_garbage() -> None:
    items = [f"vol-{i:017x}" for i in range(7)]
    page, token = paginate(items, str, "", 3, lambda t: t.startswith("vol-"))
    assert page == items[:3] and token == items[3]
    remaining = items[:2] + items[4:]  # items[2] and the token item itself were deleted meanwhile
    page2, token2 = paginate(remaining, str, token, 3, lambda t: t.startswith("vol-"))
    assert page2 == items[4:7] and token2 == ""
    with pytest.raises(errors.Aborted):
        paginate(items, str, "nope", 3, lambda t: t.startswith("vol-"))


def test_nul_is_refused_in_names_and_paths_but_not_in_ids() -> None:
    # A NUL id is left to the callers' exact id checks, which answer "unknown" (NOT_FOUND, or OK to a delete).
    for field in ("volume_id", "node_id", "snapshot_id", "source_volume_id"):
        require_text("vol-\x00", field)
    for field in ("name", "target_path", "staging_target_path", "volume_path"):
        with pytest.raises(errors.InvalidArgument, match=f"^{field} contains a NUL byte .at character 1."):
            require_text("a\x00b", field)
    with pytest.raises(errors.InvalidArgument, match="volume_id is required"):
        require_text("", "volume_id")


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidParameter("k", "m"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.InUse("m", "n"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.NotFound("m"), grpc.StatusCode.NOT_FOUND),
        (errors.Exhausted("m"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Aborted("m"), grpc.StatusCode.ABORTED),
        (errors.Unauthenticated("m"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.PermissionDenied("m"), grpc.StatusCode.PERMISSION_DENIED),
        (ValueError("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_one_table_maps_errors(exc: BaseException, code: grpc.StatusCode) -> None:
    assert status_for(exc)[0] == code


def test_sizes() -> None:
    assert parse_size("4Gi") == 4 << 30
    assert parse_size("20G") == 20 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("1000") == 1000
    with pytest.raises(errors.InvalidArgument):
        parse_size("lots")
