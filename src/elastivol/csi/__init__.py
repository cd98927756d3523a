"""CSI v1.12.0 wire contract for elastivol.

``csi_pb2``, ``csi_pb2.pyi`` and ``csi_pb2_grpc`` are generated from
``proto/csi.proto`` by ``scripts/gen_proto.py``; do not edit them by hand.
``secrets`` is hand-written: it redacts fields the spec marks ``csi_secret``.

Import the submodules explicitly, e.g. ``from elastivol.csi import csi_pb2``.
"""

CSI_SPEC_VERSION = "1.12.0"

__all__ = ["CSI_SPEC_VERSION"]
