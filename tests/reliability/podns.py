"""Run a command as a node-plugin container would: in its own mount namespace, the pool at another path.

Usage (under ``unshare -m --propagation unchanged``, which gives the new namespace)::

    python -m tests.reliability.podns POOL POD_POOL -- COMMAND...

binds the pool directory POOL at POD_POOL inside this namespace only (POD_POOL's parent must
be a private mount, so nothing propagates back), then execs COMMAND in the same process: a
SIGKILL of the command ends the namespace, as the end of a container does. The kubelet
directory keeps whatever propagation the host gave it (a shared bind there makes staging
mounts reach the host, like the chart's Bidirectional /var/lib/kubelet).
"""

from __future__ import annotations

import os
import sys

from elastivol.node import mount


def main(argv: list[str]) -> None:
    sep = argv.index("--")
    pool, pod_pool = argv[:sep]
    command = argv[sep + 1:]
    os.makedirs(pod_pool, exist_ok=True)
    mount.bind(pool, pod_pool)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
