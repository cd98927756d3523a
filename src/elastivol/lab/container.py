"""A lab container: a host process in its own mount and UTS namespaces, with its volumes bound in.

Run as ``python -m elastivol.lab.container SPEC.json``. It unshares, makes every mount a slave of the
host's (nothing it binds leaks out; the host's unmounts reach in), sets the hostname to the pod's name, binds each volume at its
mountPath (read-only where asked), then runs the command as its child and records the exit code in
the file the kubelet watches. It imports only the host layer's syscall wrappers: it starts once per container.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import threading
import time

from elastivol.node import _sys
from elastivol.node.mount import MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setup(spec: dict[str, object]) -> None:
    cgroup = str(spec.get("cgroup") or "")
    if cgroup:
        # The pod's cgroup, where the node plugin put its volumes' I/O limits; the command inherits it.
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as fh:
            fh.write(f"{os.getpid()}\n")
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS), "unshare")
    # Slave, not private: unmounts on the host (a volume unstaged for another pod) reach this
    # namespace too, so it never pins a loop device it does not use; its own binds stay here.
    _sys.mount(None, "/", None, MS_REC | MS_SLAVE, None)
    hostname = str(spec["hostname"]).encode()
    _check(_libc.sethostname(hostname, len(hostname)), "sethostname")
    ours = set()
    for m in spec.get("mounts") or []:  # type: ignore[attr-defined]
        source, target = m["source"], m["target"]
        _sys.mount(source, target, None, MS_BIND, None)
        if m.get("readonly"):
            _sys.mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        ours.add(os.path.realpath(target))
    drop_foreign_mounts(ours)


def _unescape(field: str) -> str:
    return field.encode().decode("unicode_escape") if "\\" in field else field


def drop_foreign_mounts(keep: set[str]) -> None:
    """Detach the copies of loop-backed mounts this container did not ask for.

    unshare copied every mount of the host, including other volumes' and the pools'. Held here,
    they would keep those loop devices busy after the host unmounts them, so that nobody could
    unstage or detach them while this container lives. A container needs only its own volumes.
    """
    with open("/proc/self/mountinfo") as fh:
        lines = fh.read().splitlines()
    targets = []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 2:
            continue
        point, source = _unescape(fields[4]), tail[1]
        if source.startswith("/dev/loop") and point not in keep and point != "/":
            targets.append(point)
    for point in sorted(set(targets), key=len, reverse=True):
        with contextlib.suppress(OSError):  # best effort: a mount already gone is fine
            _sys.umount2(point, _sys.MNT_DETACH)


def main() -> int:
    with open(sys.argv[1]) as fh:
        spec = json.load(fh)
    exit_file = spec["exit_file"]
    try:
        setup(spec)
    except OSError as exc:
        print(f"lab: cannot set up the container: {exc}", file=sys.stderr, flush=True)
        _record(exit_file, 128)
        return 128
    # The command writes into a pipe, pumped here into the log (this process's stdout), so that the
    # time of each piece is known: `lab logs --since` reads it from the log_times file.
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(read_end)
        os.close(write_end)
        try:
            os.chdir(spec.get("workingDir") or "/")
            os.execvpe(spec["command"][0], spec["command"], {**spec["env"]})
        except OSError as exc:
            print(f'lab: exec "{spec["command"][0]}" failed: {exc.strerror}', file=sys.stderr, flush=True)
            os._exit(127)
    os.close(write_end)
    pump = threading.Thread(target=_pump, args=(read_end, spec.get("log_times")), daemon=True)
    pump.start()

    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        try:
            _pid, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    # What the command wrote before it exited is in the pipe; a background process it left may keep
    # the pipe open, so do not wait for the end of the stream.
    pump.join(timeout=1.0)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N: 128+N, as a shell reports it
    _record(exit_file, code)
    return code


def _pump(read_end: int, times_path: str | None) -> None:
    """Copy the command's output to stdout (the log) and note "<offset> <time>" for each chunk."""
    times = open(times_path, "a", buffering=1) if times_path else None
    try:
        while True:
            try:
                chunk = os.read(read_end, 65536)
            except InterruptedError:
                continue
            if not chunk:
                return
            offset = os.fstat(1).st_size
            if times is not None:
                times.write(f"{offset} {time.time():.3f}\n")
            view = memoryview(chunk)
            while view:
                view = view[os.write(1, view):]
    except OSError:
        return
    finally:
        if times is not None:
            times.close()


def _record(path: str, code: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(code))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
