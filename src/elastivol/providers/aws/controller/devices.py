"""Device names for AttachVolume, per instance.

EC2 makes the caller choose the device name, and two attachments to one instance must never be
given the same name: AWS refuses the second, or worse, it sticks in ``attaching``. Names in use
come from the instance's block device mappings (the truth in AWS); names handed out here and
not yet visible there are held as in flight until the attach settles. Free names are reused,
lowest first, so a node that detaches and attaches again does not run through the alphabet.
"""

from __future__ import annotations

import contextlib
import string
import threading
from collections.abc import Iterable, Iterator

from elastivol.errors import Exhausted

PREFIX = "/dev/xvd"
# /dev/xvdaa ... /dev/xvdzz: two letters keep clear of the root device (/dev/xvda, /dev/sda1)
# and of the single-letter names that AMIs and instance store volumes take.
NAMES = tuple(PREFIX + a + b for a in string.ascii_lowercase for b in string.ascii_lowercase)


def _short(name: str) -> str:
    """/dev/sdf and /dev/xvdf are the same slot to EC2; compare names without the prefix."""
    for prefix in ("/dev/xvd", "/dev/sd"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


class DeviceAllocator:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[str, set[str]] = {}

    @contextlib.contextmanager
    def hold(self, instance_id: str, in_use: Iterable[str], avoid: Iterable[str] = ()) -> Iterator[str]:
        """A free name for ``instance_id``, held until the block exits (attach done or failed)."""
        taken = {_short(n) for n in (*in_use, *avoid)}
        with self._lock:
            flying = self._in_flight.setdefault(instance_id, set())
            for name in NAMES:
                if _short(name) not in taken and name not in flying:
                    flying.add(name)
                    break
            else:
                raise Exhausted(
                    f"instance {instance_id} has no free device name left ({len(NAMES)} names, all used or being "
                    "attached); detach volumes from it first"
                )
        try:
            yield name
        finally:
            with self._lock:
                flying.discard(name)
                if not flying:
                    self._in_flight.pop(instance_id, None)
