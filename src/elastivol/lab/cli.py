"""`elastivol lab ...`: a kubectl-like front to the lab, so people's habits carry over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from elastivol.errors import ElastivolError
from elastivol.lab.layout import DEFAULT_ZONES, Layout, daemon_pid, default_dir, make_config
from elastivol.units import parse_duration

err = Console(stderr=True, soft_wrap=True)  # never break a message into lines: people grep for it
out = Console(width=None if sys.stdout.isatty() else 200, highlight=False, soft_wrap=True)


def _layout(directory: str | None) -> Layout:
    return Layout(Path(directory).resolve() if directory else default_dir())


def _die(message: str, code: int = 1) -> NoReturn:
    err.print(message, markup=False, highlight=False)
    sys.exit(code)


_DIR = click.option("--dir", "directory", default=None, envvar="ELASTIVOL_LAB_DIR",
                    help="The lab's directory (default: $ELASTIVOL_LAB_DIR, else ~/.elastivol/lab).")
_NS = click.option("-n", "--namespace", default="default", show_default=True)


F = TypeVar("F", bound=Callable[..., Any])


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float:
    """kubectl's durations (120s, 2m, 1m30s, 500ms); a plain number is seconds."""
    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration(str(value))
    except ElastivolError as exc:
        raise click.BadParameter(exc.message, ctx=ctx, param=param) from None


def _timeout(default: int) -> Callable[[F], F]:
    return click.option("--timeout", default=str(default), show_default=True, callback=_duration, metavar="DURATION",
                        help="How long to wait: 120s, 2m, 1m30s, 500ms (kubectl's syntax) or plain seconds.")


@click.group("lab")
def lab() -> None:
    """Kubernetes' storage control loops on one machine, driving the real CSI drivers.

    \b
    elastivol lab up                     start a 3-node lab (zones zone-a, zone-b, zone-c)
    elastivol lab apply -f examples/01-ebs-dynamic/
    elastivol lab get pvc,pv,pod
    elastivol lab describe pvc ebs-claim
    elastivol lab down                   stop it; leaves no mount, loop device or process
    """


def _require_root() -> None:
    if os.geteuid() != 0:
        _die("error: the lab attaches loop devices and mounts filesystems: run it as root")


# -- lifecycle -------------------------------------------------------------------------------------
@lab.command()
@_DIR
@click.option("--nodes", type=int, default=3, show_default=True, help="How many nodes (1-5).")
@click.option("--zones", default=",".join(DEFAULT_ZONES), show_default=True,
              help="Comma-separated zone names, used exactly as given; nodes are spread over them.")
@_timeout(90)
def up(directory: str | None, nodes: int, zones: str, timeout: float) -> None:
    """Start the lab in the background and return when it is ready (resumes a stopped lab)."""
    from elastivol.lab.layout import LabConfig

    _require_root()
    layout = _layout(directory)
    if daemon_pid(layout):
        err.print(f"lab in {layout.root} is already up")
        return
    try:
        config: LabConfig
        if layout.config_file.exists():
            config = layout.read_config()
            wanted = make_config(nodes, [z.strip() for z in zones.split(",") if z.strip()])
            if [(n.name, n.zone) for n in wanted.nodes] != [(n.name, n.zone) for n in config.nodes] and \
                    (nodes, zones) != (3, ",".join(DEFAULT_ZONES)):
                _die(f"error: the lab in {layout.root} has nodes "
                     f"{', '.join(f'{n.name} ({n.zone})' for n in config.nodes)}; "
                     "`elastivol lab down --purge` first to change them")
        else:
            config = make_config(nodes, [z.strip() for z in zones.split(",") if z.strip()])
        _prepare(layout, config)
    except ElastivolError as exc:
        _die(f"error: {exc.message}")
    layout.logs.mkdir(parents=True, exist_ok=True)
    with open(layout.logs / "daemon.log", "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "elastivol", "lab", "_daemon", "--dir", str(layout.root)],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _die(f"error: the lab daemon exited ({proc.returncode}); its log:\n{_tail(layout.logs / 'daemon.log')}")
        try:
            status = json.loads(layout.status_file.read_text())
        except (OSError, ValueError):
            status = {}
        if status.get("ready") and status.get("pid") == proc.pid:  # not a dead daemon's stale status
            err.print(f"lab up in {layout.root}: {len(config.nodes)} node(s) in "
                      f"{', '.join(sorted({n.zone for n in config.nodes}))}; file system {config.fs_id}")
            return
        time.sleep(0.2)
    _die(f"error: the lab did not become ready within {timeout:.0f}s; see {layout.logs / 'daemon.log'}")


def _prepare(layout: Layout, config: Any) -> None:
    from elastivol.lab.daemon import share_root
    from elastivol.providers.local.file.registry import FileRegistry
    from elastivol.providers.local.pool import Pool, init_pool

    share_root(layout)
    init_pool(layout.block_pool, 20 << 30, "xfs")
    init_pool(layout.file_pool, 4 << 30, "btrfs")
    layout.fs_root.mkdir(parents=True, exist_ok=True)
    config.fs_id = FileRegistry(Pool(layout.file_pool)).register("shared", str(layout.fs_root)).id
    layout.write_config(config)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@lab.command()
@_DIR
@click.option("--purge", is_flag=True, help="Also delete the lab's objects, volumes and directory.")
@_timeout(120)
def down(directory: str | None, purge: bool, timeout: float) -> None:
    """Stop the lab: containers, volumes (unpublished, unstaged, detached), plugins, pools."""
    import shutil
    import signal

    from elastivol.lab.daemon import leftovers, sweep

    _require_root()
    layout = _layout(directory)
    if not layout.root.exists():
        _die(f"error: no lab in {layout.root}")
    pid = daemon_pid(layout)
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while daemon_pid(layout) and time.monotonic() < deadline:
            time.sleep(0.2)
        if daemon_pid(layout):
            err.print(f"the lab daemon did not stop within {timeout:.0f}s; killing it")
            os.kill(pid, signal.SIGKILL)
    repaired = sweep(layout)
    for line in repaired:
        err.print(f"  cleaned up: {line}")
    left = leftovers(layout)
    if left:
        _die("error: the lab left these behind:\n  " + "\n  ".join(left))
    if purge:
        shutil.rmtree(layout.root, ignore_errors=True)
        err.print(f"lab in {layout.root} stopped and deleted")
    else:
        err.print(f"lab in {layout.root} stopped: no mount, loop device, process or socket is left. "
                  "Its objects and volumes are kept: `elastivol lab up` resumes, `lab down --purge` deletes them")


@lab.command("_daemon", hidden=True)
@click.option("--dir", "directory", required=True)
def daemon(directory: str) -> None:
    from elastivol.lab.daemon import main

    sys.exit(main(directory))


@lab.command()
@_DIR
def status(directory: str | None) -> None:
    """The lab's processes, nodes, zones and pool usage."""
    from elastivol.lab.store import Store
    from elastivol.providers.local.pool import Pool
    from elastivol.units import human

    layout = _layout(directory)
    try:
        config = layout.read_config()
    except ElastivolError as exc:
        _die(f"error: {exc.message}")
    pid = daemon_pid(layout)
    try:
        st = json.loads(layout.status_file.read_text()) if pid else {}
    except (OSError, ValueError):
        st = {}
    out.print(f"lab {layout.root}: " + ("[green]up[/green]" if st.get("ready") else
                                        "[yellow]starting[/yellow]" if pid else "[red]down[/red]"))
    procs = Table("PROCESS", "PID", "ALIVE", "SOCKET", box=None)
    procs.add_row("lab daemon (control loops)", str(pid or "-"), "yes" if pid else "no", "")
    for name, p in (st.get("processes") or {}).items():
        procs.add_row(name, str(p["pid"]), "yes" if Path(f"/proc/{p['pid']}").exists() else "NO", p["socket"])
    out.print(procs)
    store = Store(layout.root)
    nodes = Table("NODE", "ZONE", "PODS", "VOLUMES IN USE", box=None)
    pods = store.list_of("Pod")
    for n in config.nodes:
        obj = store.get("Node", n.name) or {}
        nodes.add_row(n.name, n.zone, str(sum(1 for p in pods if p["spec"].get("nodeName") == n.name)),
                      str(len((obj.get("status") or {}).get("volumesInUse") or [])))
    out.print(nodes)
    if pid:
        pools = Table("POOL", "FS", "SIZE", "FREE", "VOLUMES", box=None)
        for path in (layout.block_pool, layout.file_pool):
            try:
                p = Pool(path)
                u = p.usage()
                pools.add_row(str(path), p.config.fs_type, human(u.total_bytes), human(u.free_bytes), str(u.volumes))
            except ElastivolError as exc:
                pools.add_row(str(path), "?", "?", "?", exc.message)
        out.print(pools)
    out.print(f"shared file system: {config.fs_id} at {layout.fs_root}")


# -- objects ---------------------------------------------------------------------------------------
def _store(directory: str | None) -> tuple[Layout, Any]:
    from elastivol.lab.store import Store

    layout = _layout(directory)
    if not layout.config_file.exists():
        _die(f"error: no lab in {layout.root}: start one with `elastivol lab up`")
    return layout, Store(layout.root)


@lab.command()
@_DIR
@click.option("-f", "--filename", "files", multiple=True, required=True, help="A file, a directory or - (stdin).")
def apply(directory: str | None, files: tuple[str, ...]) -> None:
    """Create or update objects from Kubernetes YAML, as `kubectl apply` does."""
    from elastivol.lab.apply import Invalid, apply_object, load_documents

    layout, store = _store(directory)
    fs_id = layout.read_config().fs_id
    failed = False
    try:
        docs = [d for f in files for d in load_documents(f)]
    except Invalid as exc:
        _die(str(exc))
    for doc in docs:
        try:
            click.echo(apply_object(store, doc, fs_id))
        except Invalid as exc:
            err.print(str(exc), markup=False, highlight=False)
            failed = True
    if failed:
        sys.exit(1)


def _kinds(words: str) -> list[Any]:
    from elastivol.lab.kinds import resolve_kind

    try:
        return [resolve_kind(w) for w in words.split(",") if w]
    except KeyError as exc:
        _die(f"error: {exc.args[0]}")
        raise


def _collect(store: Any, kind: Any, names: tuple[str, ...], namespace: str, all_ns: bool) -> list[Any]:
    ns = None if all_ns or not kind.namespaced else namespace
    objs = store.list_of(kind.name, ns) if kind.namespaced else store.list_of(kind.name)
    if names:
        objs = [o for o in objs if o["metadata"]["name"] in names]
        missing = [n for n in names if n not in {o["metadata"]["name"] for o in objs}]
        for n in missing:
            err.print(f'Error from server (NotFound): {kind.resource} "{n}" not found', markup=False)
    return list(objs)


@lab.command()
@_DIR
@_NS
@click.option("-A", "--all-namespaces", "all_ns", is_flag=True)
@click.option("-o", "--output", default="", help="wide, yaml, json or jsonpath=TEMPLATE")
@click.argument("kinds")
@click.argument("names", nargs=-1)
def get(directory: str | None, namespace: str, all_ns: bool, output: str, kinds: str, names: tuple[str, ...]) -> None:
    """Show objects like kubectl get: `get pvc,pv,pod`, `get pv -o yaml`, `-o jsonpath={.status.phase}`."""
    from elastivol.lab import printers
    from elastivol.lab.jsonpath import jsonpath

    store = _store(directory)[1]
    if "/" in kinds and not names:
        kinds, _, name = kinds.partition("/")
        names = (name,)
    selected = _kinds(kinds)
    multi = len(selected) > 1
    found: list[Any] = []
    blocks: list[str] = []
    for kind in selected:
        objs = _collect(store, kind, names, namespace, all_ns)
        found.extend(objs)
        if output in ("", "wide") and objs:
            headers, rows = printers.table(kind.name, objs, wide=output == "wide", show_kind=multi)
            if all_ns and kind.namespaced:
                headers = ["NAMESPACE", *headers]
                rows = [[o["metadata"].get("namespace", ""), *r] for o, r in zip(objs, rows, strict=True)]
            blocks.append(printers.render_table(headers, rows))
    if output in ("", "wide"):
        if not found and not names:
            err.print(f"No resources found in {namespace} namespace." if not all_ns else "No resources found")
        click.echo("\n\n".join(blocks))
    elif output == "yaml":
        click.echo(printers.to_yaml(found, single=bool(names) and len(found) == 1 and not multi), nl=False)
    elif output == "json":
        click.echo(printers.to_json(found, single=bool(names) and len(found) == 1 and not multi))
    elif output.startswith("jsonpath="):
        template = output[len("jsonpath="):]
        single = bool(names) and len(found) == 1 and not multi
        root = found[0] if single else {"apiVersion": "v1", "kind": "List", "items": found}
        try:
            click.echo(jsonpath(root, template), nl=False)
        except ValueError as exc:
            _die(f"error: {exc}")
    else:
        _die(f"error: unable to match a printer suitable for the output format {output!r}: "
             "use wide, yaml, json or jsonpath=...")
    if names and len(found) < len(names) * len(selected):
        sys.exit(1)


@lab.command()
@_DIR
@_NS
@click.argument("kind")
@click.argument("names", nargs=-1)
def describe(directory: str | None, namespace: str, kind: str, names: tuple[str, ...]) -> None:
    """Show an object in detail, with its Events."""
    from elastivol.lab.binding import pods_using
    from elastivol.lab.describe import describe as describe_text

    store = _store(directory)[1]
    if "/" in kind and not names:
        kind, _, name = kind.partition("/")
        names = (name,)
    (k,) = _kinds(kind)
    objs = _collect(store, k, names, namespace, False)
    if not objs and names:
        sys.exit(1)
    texts = []
    for obj in objs:
        if k.name == "PersistentVolumeClaim":
            obj["_usedBy"] = [p["metadata"]["name"] for p in
                              pods_using(store.list_of("Pod"), obj["metadata"]["namespace"], obj["metadata"]["name"])]
        texts.append(describe_text(obj, store.events_for(obj)))
    click.echo("\n\n".join(texts))


@lab.command()
@_DIR
@_NS
@click.option("-f", "--filename", "files", multiple=True)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Wait until the objects are gone.")
@_timeout(90)
@click.argument("args", nargs=-1)
def delete(directory: str | None, namespace: str, files: tuple[str, ...], wait: bool, timeout: float,
           args: tuple[str, ...]) -> None:
    """Delete objects: `delete pod app`, `delete -f FILE`. Finalizers are honoured, as in Kubernetes."""
    from elastivol.lab.apply import Invalid, load_documents
    from elastivol.lab.kinds import KINDS

    store = _store(directory)[1]
    targets: list[tuple[Any, str, str | None]] = []
    if files:
        try:
            for doc in [d for f in files for d in load_documents(f)]:
                (k,) = _kinds(str(doc.get("kind", "")))
                md = doc.get("metadata") or {}
                targets.append((k, md.get("name", ""), md.get("namespace", namespace) if k.namespaced else None))
        except Invalid as exc:
            _die(str(exc))
    elif len(args) >= 2:
        kind_word, *names = args
        for k in _kinds(kind_word):
            targets += [(k, n, namespace if k.namespaced else None) for n in names]
    elif len(args) == 1 and "/" in args[0]:
        kind_word, _, name = args[0].partition("/")
        (k,) = _kinds(kind_word)
        targets.append((k, name, namespace if k.namespaced else None))
    else:
        _die("error: give KIND NAME... or -f FILE")
    failed = False
    uids: dict[tuple[str, str, str | None], str] = {}
    for k, name, ns in reversed(targets) if files else targets:
        deleted = store.delete(k.name, name, ns)
        if deleted is None:
            err.print(f'Error from server (NotFound): {k.resource} "{name}" not found', markup=False)
            failed = True
        else:
            uids[(k.name, name, ns)] = deleted["metadata"].get("uid", "")
            click.echo(f'{k.resource.split(".")[0][:-1] if k.resource.endswith("s") else k.resource} "{name}" deleted')

    def still_there(k: Any, n: str, ns: str | None) -> bool:
        # As kubectl waits: for the object it deleted (its uid), not for the name, which a
        # controller may already have given to a new object (a StatefulSet's pod).
        obj = store.get(k.name, n, ns)
        return obj is not None and obj["metadata"].get("uid", "") == uids.get((k.name, n, ns))
    if wait:
        deadline = time.monotonic() + timeout
        pending = [(k, n, ns) for k, n, ns in targets if still_there(k, n, ns)]
        while pending and time.monotonic() < deadline:
            time.sleep(0.2)
            pending = [(k, n, ns) for k, n, ns in pending if still_there(k, n, ns)]
        for k, n, ns in pending:
            obj = store.get(k.name, n, ns) or {"metadata": {}}
            err.print(f"{KINDS[k.name].resource}/{n} is still Terminating after {timeout:.0f}s: finalizers "
                      f"{obj['metadata'].get('finalizers')}; `elastivol lab describe {k.aliases[0]} {n}` says why",
                      markup=False)
            failed = True
    if failed:
        sys.exit(1)


@lab.command()
@_DIR
@_NS
@click.option("-p", "--patch", "patch_text", required=True, help="A JSON merge patch.")
@click.option("--type", "patch_type", type=click.Choice(["merge", "strategic"]), default="strategic",
              help="Both are applied as a JSON merge patch (enough for the maps the lab's objects hold).")
@click.argument("kind")
@click.argument("name")
def patch(directory: str | None, namespace: str, patch_text: str, patch_type: str, kind: str, name: str) -> None:
    """Change an object with a merge patch, e.g. grow a claim:  patch pvc data -p '{"spec":{...}}'."""
    from elastivol.lab.apply import Invalid, patch_object

    store = _store(directory)[1]
    try:
        click.echo(patch_object(store, kind, name, namespace, patch_text))
    except Invalid as exc:
        _die(str(exc))
    except KeyError as exc:
        _die(f"error: {exc.args[0]}")


# -- pods ------------------------------------------------------------------------------------------
def _pod_state(layout: Layout, store: Any, name: str, namespace: str) -> tuple[Any, dict[str, Any]]:
    pod = store.get("Pod", name, namespace)
    if pod is None:
        _die(f'Error from server (NotFound): pods "{name}" not found')
    try:
        state = json.loads((layout.pod_dir(pod["metadata"]["uid"]) / "state.json").read_text())
    except (OSError, ValueError):
        state = {}
    return pod, state


@lab.command("exec", context_settings={"ignore_unknown_options": True})
@_DIR
@_NS
@click.option("-c", "--container", default="")
@click.option("-i", "--stdin", "interactive", is_flag=True, help="Accepted for kubectl habits; stdin is passed.")
@click.option("-t", "--tty", is_flag=True, help="Accepted for kubectl habits.")
@click.argument("pod_name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(directory: str | None, namespace: str, container: str, interactive: bool, tty: bool, pod_name: str,
          command: tuple[str, ...]) -> None:
    """Run a command in a pod's namespaces: `exec app -- tail -n 3 /data/out.txt`."""
    from elastivol.lab.kubelet import proc_start_time

    layout, store = _store(directory)
    pod, state = _pod_state(layout, store, pod_name, namespace)
    containers = state.get("containers") or {}
    name = container or (pod["spec"]["containers"][0]["name"])
    info = containers.get(name)
    if not info or not info.get("pid") or proc_start_time(info["pid"]) != info.get("start"):
        _die(f'error: unable to upgrade connection: container "{name}" in pod "{pod_name}" is not running')
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME": pod_name,
           "HOME": "/root", "TERM": os.environ.get("TERM", "xterm")}
    for c in pod["spec"]["containers"]:
        if c["name"] == name:
            env.update({e["name"]: str(e.get("value", "")) for e in c.get("env") or []})
    argv = ["nsenter", "-t", str(info["pid"]), "-m", "-u", "--", *command]
    if state.get("cgroup"):
        # As kubectl exec: the command runs in the pod's cgroup, so under its volumes' I/O limits.
        from elastivol.node import iothrottle

        try:
            iothrottle.join(Path(state["cgroup"]))
        except OSError as exc:
            click.echo(f"lab: cannot join the pod's cgroup {state['cgroup']}: {exc.strerror}; the command runs "
                       "outside its I/O limits", err=True)
    sys.exit(subprocess.call(argv, env=env))


@lab.command()
@_DIR
@_NS
@click.option("-c", "--container", default="")
@click.option("-f", "--follow", is_flag=True)
@click.option("--tail", type=int, default=-1)
@click.option("--since", default=None, callback=lambda c, p, v: None if v is None else _duration(c, p, v),
              metavar="DURATION", help="Only output written in the last DURATION (5s, 2m, 1h, or plain seconds).")
@click.argument("pod_name")
def logs(directory: str | None, namespace: str, container: str, follow: bool, tail: int, since: float | None,
         pod_name: str) -> None:
    """A container's output (stdout and stderr)."""
    from elastivol.lab.kubelet import log_times

    layout, store = _store(directory)
    pod, _state = _pod_state(layout, store, pod_name, namespace)
    name = container or pod["spec"]["containers"][0]["name"]
    path = layout.pod_dir(pod["metadata"]["uid"]) / f"{name}.log"
    if not path.exists():
        _die(f'error: container "{name}" in pod "{pod_name}" has not started yet')
    data = path.read_bytes()
    if since is not None:
        data = data[_offset_since(log_times(path), time.time() - since, len(data)):]
    lines = data.decode(errors="replace").splitlines(keepends=True)
    click.echo("".join(lines if tail < 0 else lines[-tail:] if tail else []), nl=False)
    if follow:
        with open(path, errors="replace") as fh:
            fh.seek(0, 2)
            try:
                while store.get("Pod", pod_name, namespace) is not None:
                    chunk = fh.read()
                    if chunk:
                        click.echo(chunk, nl=False)
                    time.sleep(0.3)
            except KeyboardInterrupt:
                pass


def _offset_since(times: Path, cutoff: float, size: int) -> int:
    """The log offset of the first piece written at or after ``cutoff`` (the log's size if none was)."""
    try:
        entries = times.read_text().splitlines()
    except OSError:
        return 0  # a container started before the lab kept times: all of its log
    for entry in entries:
        offset, _, when = entry.partition(" ")
        try:
            if float(when) >= cutoff:
                return int(offset)
        except ValueError:
            continue
    return size


@lab.command()
@_DIR
@_NS
@click.option("--for", "condition", required=True, help="condition=NAME[=VALUE], jsonpath={...}=VALUE, or delete")
@_timeout(30)
@click.argument("target")
@click.argument("names", nargs=-1)
def wait(directory: str | None, namespace: str, condition: str, timeout: float, target: str,
         names: tuple[str, ...]) -> None:
    """Wait for a condition: `wait pvc/data --for=jsonpath='{.status.phase}'=Bound`."""
    from elastivol.lab.jsonpath import jsonpath

    store = _store(directory)[1]
    if "/" in target:
        kind_word, _, n = target.partition("/")
        names = (n, *names)
    else:
        kind_word = target
    (k,) = _kinds(kind_word)
    if not names:
        _die("error: name the objects to wait for")
    ns = namespace if k.namespaced else None

    def holds(obj: Any) -> bool:
        if condition == "delete":
            return obj is None
        if obj is None:
            return False
        if condition.startswith("condition="):
            cname, _, value = condition[len("condition="):].partition("=")
            value = value or "True"
            return any(c.get("type", "").lower() == cname.lower() and str(c.get("status")) == value
                       for c in (obj.get("status") or {}).get("conditions") or [])
        if condition.startswith("jsonpath="):
            expr, _, value = condition[len("jsonpath="):].rpartition("=")
            if not expr:
                expr, value = value, ""
            got = jsonpath(obj, expr if expr.startswith("{") else "{" + expr + "}")
            return got == value if value else bool(got)
        _die(f"error: unrecognized condition {condition!r}")
        return False

    deadline = time.monotonic() + timeout
    for name in names:
        while not holds(store.get(k.name, name, ns)):
            if time.monotonic() > deadline:
                _die(f"error: timed out waiting for the condition on {k.plural}/{name}")
            time.sleep(0.2)
        click.echo(f"{k.resource}/{name} condition met")


@lab.command()
@_DIR
@_NS
def df(directory: str | None, namespace: str) -> None:
    """PV usage per pod, like `kubectl df-pv` (NodeGetVolumeStats from each node plugin)."""
    from elastivol.client import CsiClient
    from elastivol.csi import csi_pb2
    layout, store = _store(directory)
    rows: list[list[str]] = []
    for pod in store.list_of("Pod", namespace):
        state = {}
        try:
            state = json.loads((layout.pod_dir(pod["metadata"]["uid"]) / "state.json").read_text())
        except (OSError, ValueError):
            continue
        for vol_name, vol in (state.get("volumes") or {}).items():
            with CsiClient(f"unix://{layout.socket(vol['driver'], state['node'])}", timeout=10) as client:
                try:
                    stats = client.node.NodeGetVolumeStats(csi_pb2.NodeGetVolumeStatsRequest(
                        volume_id=vol["handle"], volume_path=vol["target"]), timeout=10)
                except Exception as exc:
                    rows.append([vol["pv"], vol["claim"], namespace, state["node"], pod["metadata"]["name"], vol_name,
                                 "?", "?", "?", "?", "?", "?", str(exc)[:60]])
                    continue
            by_unit = {u.unit: u for u in stats.usage}
            b = by_unit.get(csi_pb2.VolumeUsage.BYTES)
            i = by_unit.get(csi_pb2.VolumeUsage.INODES)

            def pct(used: int, total: int) -> str:
                return f"{100 * used / total:.2f}" if total else "-"
            rows.append([vol["pv"], vol["claim"], namespace, state["node"], pod["metadata"]["name"], vol_name,
                         _gi(b.total if b else 0), _gi(b.used if b else 0), _gi(b.available if b else 0),
                         pct(b.used, b.total) if b else "-", str(i.used) if i else "-",
                         str(i.available) if i else "-", pct(i.used, i.total) if i else "-"])
    from elastivol.lab.printers import render_table

    headers = ["PV NAME", "PVC NAME", "NAMESPACE", "NODE NAME", "POD NAME", "VOLUME MOUNT NAME", "SIZE", "USED",
               "AVAILABLE", "%USED", "IUSED", "IFREE", "%IUSED"]
    if not rows:
        err.print("No mounted volumes found")
        return
    click.echo(render_table(headers, rows))


def _gi(n: int) -> str:
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return str(n)
