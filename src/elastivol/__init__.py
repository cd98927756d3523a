"""elastivol: EBS- and EFS-style CSI drivers with a local and an AWS provider."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("elastivol")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+src"

BLOCK_DRIVER_NAME = "block.csi.elastivol.io"
FILE_DRIVER_NAME = "file.csi.elastivol.io"
