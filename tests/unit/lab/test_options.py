"""The lab's command-line habits that come from kubectl: zones named as given, kubectl durations."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from elastivol.errors import InvalidArgument
from elastivol.lab.cli import lab
from elastivol.lab.layout import make_config
from elastivol.units import parse_duration


def test_zones_are_named_exactly_as_given() -> None:
    config = make_config(4, ["us-east-1a", "us-east-1b", "us-east-1c"])
    assert config.zones == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert [(n.name, n.zone) for n in config.nodes] == [
        ("node-1", "us-east-1a"), ("node-2", "us-east-1b"), ("node-3", "us-east-1c"), ("node-4", "us-east-1a")]


def test_zone_names_twice_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="names a zone twice"):
        make_config(3, ["ap-northeast-2a", "ap-northeast-2a"])


def test_a_zone_that_cannot_be_a_label_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="cannot be a node label value"):
        make_config(3, ["us east 1a"])


def test_default_zones_stay_zone_a_b_c() -> None:
    up = next(p for p in lab.commands["up"].params if p.name == "zones")
    assert up.default == "zone-a,zone-b,zone-c"
    assert make_config(3, str(up.default).split(",")).zones == ["zone-a", "zone-b", "zone-c"]


@pytest.mark.parametrize(("text", "seconds"), [
    ("120s", 120.0), ("2m", 120.0), ("1h", 3600.0), ("1m30s", 90.0), ("500ms", 0.5), ("1.5s", 1.5),
    ("1h2m3s", 3723.0), ("90", 90.0), ("2.5", 2.5), ("0", 0.0),
])
def test_kubectl_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "2x", "-5s", "1m30", "m2", "1 m", "ten"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match=r"is not a duration; write e\.g\. 120s"):
        parse_duration(text)


@pytest.mark.parametrize("command", ["up", "down", "delete", "wait"])
def test_every_timeout_flag_takes_kubectl_durations(command: str) -> None:
    (timeout,) = [p for p in lab.commands[command].params if p.name == "timeout"]
    ctx = click.Context(lab.commands[command])
    assert timeout.process_value(ctx, "1m30s") == 90.0
    assert timeout.process_value(ctx, "45") == 45.0
    assert timeout.process_value(ctx, timeout.get_default(ctx)) == float(str(timeout.default))


def test_a_bad_duration_is_a_clear_click_error(tmp_path: object) -> None:
    result = CliRunner().invoke(lab, ["wait", "--dir", str(tmp_path), "pvc/x", "--for=delete", "--timeout", "2x"])
    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.output
    assert "'2x' is not a duration; write e.g. 120s, 2m" in result.output
    assert "Traceback" not in result.output

