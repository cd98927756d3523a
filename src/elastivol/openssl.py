"""Keeping OpenSSL out of a serve process that never speaks TLS.

asyncio imports ssl and hashlib/hmac import _hashlib; each maps libcrypto, about 4 MiB of resident
memory in every node plugin of a DaemonSet. A local-provider plugin without --metrics-address talks
only over its unix socket, so it needs neither: marking the modules absent sends those imports down
their documented no-OpenSSL paths (asyncio without TLS support, hashlib's built-in SHA-2).
"""

from __future__ import annotations

import sys

_MODULES = ("ssl", "_ssl", "_hashlib")


def keep_out() -> bool:
    """Mark OpenSSL's modules absent for this process; False (and nothing done) if one is loaded."""
    if any(name in sys.modules for name in _MODULES):
        return False
    for name in _MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    return True
