"""Parts a caller may put into a `serve` process in place of the defaults.

`elastivol serve` uses none of them. The test support package (tests/support/serve.py) runs the
same CLI with a fault layer on the AWS clients and a mounter that binds local directories where
EFS would be mounted over NFS, so that the code under test stays the code that ships. The CLI
takes a :class:`Parts` from click's context object (``cli.main(obj=Parts(...))``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from elastivol.providers.aws.clients import EventHooks
    from elastivol.providers.aws.mounter import Mounter


@dataclass(frozen=True)
class Parts:
    aws_client_hooks: EventHooks | None = None
    efs_mounter: Callable[[str], Mounter] | None = None  # region -> the EFS mounter of a node
