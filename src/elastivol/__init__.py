"""elastivol: EBS- and EFS-style CSI drivers with a local and an AWS provider."""

from __future__ import annotations

BLOCK_DRIVER_NAME = "block.csi.elastivol.io"
FILE_DRIVER_NAME = "file.csi.elastivol.io"


def __getattr__(name: str) -> str:
    # ``__version__`` is read from the installed metadata on first use: importlib.metadata costs a
    # node plugin ~4 MiB and tens of milliseconds at start, for a string read once per GetPluginInfo.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("elastivol")
        except PackageNotFoundError:  # running from a source tree without installation
            found = "0.0.0+src"
        globals()["__version__"] = found
        return found
    raise AttributeError(f"module 'elastivol' has no attribute {name!r}")
