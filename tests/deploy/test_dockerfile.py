"""deploy/Dockerfile, linted without a container engine.

Images cannot be built here, so the Dockerfile is read instead: every Debian package it installs
must exist in the Debian release of its base image (checked with apt-cache on this Debian
machine), it must bring every host tool the node plugin runs, its ENTRYPOINT must be
`elastivol serve` with flags and environment variables that command knows, and what it COPYs
must exist.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from tests.deploy.chart import CHART, DEPLOY, DOCKERFILE, REPO

pytestmark = pytest.mark.deploy


def instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """(INSTRUCTION, argument) pairs, with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def one(keyword: str) -> str:
    found = [arg for kw, arg in instructions() if kw == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def apt_packages() -> list[str]:
    packages: list[str] = []
    for kw, arg in instructions():
        if kw != "RUN":
            continue
        for command in re.split(r"&&|;", arg):
            words = shlex.split(command)
            if "apt-get" in words and "install" in words:
                packages += [w for w in words[words.index("install") + 1:] if not w.startswith("-")]
    return packages


def serve_command() -> click.Command:
    from elastivol.cli import main

    serve = main.commands["serve"]
    assert isinstance(serve, click.Command)
    return serve


def test_base_is_python_311_slim_on_a_pinned_debian() -> None:
    base = one("FROM")
    assert re.fullmatch(r"python:3\.11-slim-(bookworm|trixie)", base), base


def test_installs_the_host_tools_of_the_node_plugin() -> None:
    packages = set(apt_packages())
    assert {"util-linux", "mount", "e2fsprogs", "xfsprogs", "nvme-cli", "nfs-common"} <= packages
    # Every tool elastivol spawns, by the package its error message names.
    from elastivol.node import run

    assert set(run._PACKAGES.values()) <= packages, set(run._PACKAGES.values()) - packages


def _debian_codename() -> str:
    text = Path("/etc/os-release").read_text()
    match = re.search(r"^VERSION_CODENAME=(\w+)", text, re.M)
    return match.group(1) if match else ""


def test_every_package_exists_in_debian() -> None:
    codename = one("FROM").rsplit("-", 1)[-1]
    host = _debian_codename()
    if host != codename:
        pytest.fail(f"the image is based on Debian {codename} but this machine runs {host or 'no Debian'}: "
                    "apt-cache here cannot vouch for the image's package names; update the FROM line or the check")
    packages = apt_packages()
    proc = subprocess.run(["apt-cache", "policy", *packages], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    candidates = dict(re.findall(r"^(\S+):\n(?:\s+Installed:.*\n)?\s+Candidate: (\S+)", proc.stdout, re.M))
    if not candidates and not list(Path("/var/lib/apt/lists").glob("*_Packages*")):
        pytest.fail("apt has no package lists here: run `apt-get update` once (as root), then rerun")
    missing = [p for p in packages if candidates.get(p, "(none)") == "(none)"]
    assert not missing, f"not in Debian {codename}: {missing}"


def test_entrypoint_is_elastivol_serve() -> None:
    entrypoint = json.loads(one("ENTRYPOINT"))
    assert entrypoint[:2] == ["elastivol", "serve"]
    args = entrypoint[2:] + [json.loads(arg) for kw, arg in instructions() if kw == "CMD"][0:1]
    with serve_command().make_context("serve", list(args), resilient_parsing=False) as ctx:
        assert ctx.params["driver"] in ("block", "file")


def test_environment_variables_are_ones_serve_reads() -> None:
    envvars = {e for p in serve_command().params for e in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}
    for kw, arg in instructions():
        if kw != "ENV":
            continue
        for item in shlex.split(arg):
            name = item.partition("=")[0]
            if name.startswith(("ELASTIVOL_", "CSI_")):
                assert name in envvars, f"ENV {name} is not read by `elastivol serve` ({sorted(envvars)})"


def test_runs_unprivileged_by_default_as_the_uid_the_chart_expects() -> None:
    user = one("USER").partition(":")[0]
    assert user.isdigit() and int(user) != 0, "the image's default user must be a non-root uid"
    controller = (CHART / "templates" / "controller.yaml").read_text()
    assert f"runAsUser: {user}" in controller, "the controller pod runs as the image's user"
    node = (CHART / "templates" / "node.yaml").read_text()
    assert "runAsUser: 0" in node and "privileged: true" in node


def test_copied_sources_exist_and_are_not_ignored() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for kw, arg in instructions():
        if kw != "COPY":
            continue
        sources = shlex.split(arg)[:-1]
        for src in sources:
            assert (REPO / src).exists(), f"COPY {src}: not in the repository (the build context is its root)"
            assert f"!{src}" in ignore or f"!{src}/" in ignore, f"COPY {src}: excluded by Dockerfile.dockerignore"


def test_chart_app_version_matches_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    pyproject = (REPO / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M)
    assert version and chart["appVersion"] == version.group(1)
