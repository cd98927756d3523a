"""VolumeAttributesClass on a cluster: the chart's external-resizer runs its modify controller.

external-resizer's VolumeAttributesClass feature gate is on by default from v2.0.0 (GA with
Kubernetes 1.34); before that it had to be passed as --feature-gates=VolumeAttributesClass=true.
The chart pins a release where it is on and passes no gate: this test fails if the pin moves
below v2.0.0 or if a gate that turns it off is ever passed, so the chart keeps ControllerModifyVolume
reachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from tests.deploy.chart import CHART, SCENARIOS, SIDECARS, Scenario, flags, iter_containers

pytestmark = pytest.mark.deploy
GATE_DEFAULT_ON_FROM = (2, 0, 0)


def _version(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in tag.lstrip("v").split("-")[0].split("."))


def test_the_pinned_resizer_has_the_gate_on_by_default() -> None:
    tag = yaml.safe_load((CHART / "values.yaml").read_text())["sidecars"]["resizer"]["image"]["tag"]
    assert _version(tag) >= GATE_DEFAULT_ON_FROM, (
        f"csi-resizer {tag} needs --feature-gates=VolumeAttributesClass=true for ControllerModifyVolume")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_no_resizer_turns_volume_attributes_classes_off(rendered: Callable[[Scenario], list[dict[str, Any]]],
                                                        scenario: Scenario) -> None:
    resizers = [c for _w, c in iter_containers(rendered(scenario)) if SIDECARS.get(c["name"]) == "resizer"]
    for c in resizers:
        gates = ",".join(flags(c).get("feature-gates", []))
        assert "VolumeAttributesClass=false" not in gates
