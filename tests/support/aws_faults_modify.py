"""Fault layer, part two: EC2's limits on ModifyVolume, which moto does not model.

EC2 refuses a ModifyVolume while the volume's previous modification is still ``modifying`` or
``optimizing`` (``IncorrectModificationState``), and refuses any modification within hours of the
previous one (``VolumeModificationRateExceeded``; six hours on AWS). moto accepts both. This keeps,
per volume, whether a modification is in progress (the fault layer's ``modifying_polls`` /
``optimizing_polls`` decide how long) and when the last one started, and answers as EC2 does.

Enabled with the ``modify_one_at_a_time`` and ``modify_cooldown_s`` keys of ``ELASTIVOL_AWS_FAULTS``.
"""

from __future__ import annotations

import time


class ModifyLimits:
    def __init__(self, *, one_at_a_time: bool, cooldown_s: float) -> None:
        self.one_at_a_time = one_at_a_time
        self.cooldown_s = cooldown_s
        self.started: dict[str, float] = {}  # volume id -> wall time its last accepted modification started

    @property
    def enabled(self) -> bool:
        return self.one_at_a_time or self.cooldown_s > 0

    def refusal(self, volume_id: str, in_progress: bool) -> tuple[str, str] | None:
        """(code, message) EC2 would answer a ModifyVolume of ``volume_id`` with, or None to let it through."""
        if self.one_at_a_time and in_progress:
            return ("IncorrectModificationState",
                    f"Cannot modify volume {volume_id} because it is already being modified.")
        last = self.started.get(volume_id)
        if self.cooldown_s > 0 and last is not None and time.time() - last < self.cooldown_s:
            return ("VolumeModificationRateExceeded",
                    "You've reached the maximum modification rate per volume limit. Wait at least 6 hours between "
                    "modifications per EBS volume.")
        return None

    def accepted(self, volume_id: str) -> None:
        self.started[volume_id] = time.time()
