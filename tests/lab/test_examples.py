"""Every ```lab block of examples/README.md, run against a real lab through the `elastivol lab` CLI.

The grammar of the blocks is in examples/README.md ("The `lab` blocks"). Each example gets its
own fresh lab (the ``lab_dir`` fixture), as the README says every example starts from an empty
lab. A ``wait`` or ``expect`` that does not hold within the timeout fails the test with the
example's name, the README line and what was last observed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.conftest import ROOT, lab

README = ROOT / "examples" / "README.md"
TIMEOUT = 120.0  # "120 seconds is enough for every block here"
POLL = 0.5
OPS = ("=", "!=", "contains", "matches")
VAR = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


@dataclass
class Line:
    number: int  # in examples/README.md
    text: str


@dataclass
class Example:
    name: str
    lines: list[Line]


def parse_readme(path: Path = README) -> list[Example]:
    """The ```lab blocks, each named by the ``## heading`` above it."""
    examples: list[Example] = []
    heading = ""
    block: list[Line] | None = None
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if block is None:
            if raw.startswith("## "):
                heading = raw[3:].strip()
            elif raw.strip() == "```lab":
                block = []
            continue
        if raw.strip() == "```":
            name = heading or f"line-{number}"
            if any(e.name == name for e in examples):
                name = f"{name}-line-{number}"
            examples.append(Example(name, block))
            block = None
            continue
        text = raw.strip()
        if text and not text.startswith("#"):
            block.append(Line(number, text))
    if block is not None:
        raise ValueError(f"{path}: a ```lab block is not closed")
    return examples


EXAMPLES = parse_readme()


def zones_of(example: Example) -> str | None:
    """The zones of a `needs: zones Z1,Z2,...` line: the lab_dir fixture brings the lab up with them."""
    for line in example.lines:
        words = line.text.split()
        if words[:2] == ["needs:", "zones"]:
            if len(words) != 3:
                raise ValueError(f"examples/README.md:{line.number}: expected `needs: zones Z1,Z2,...`")
            return words[2]
    return None


class Failed(AssertionError):
    pass


@dataclass
class Observed:
    holds: bool
    seen: str


@dataclass
class Run:
    example: Example
    directory: Path
    work: Path
    vars: dict[str, str] = field(default_factory=dict)
    placeholders: dict[str, str] = field(default_factory=dict)
    volumes: list[str] = field(default_factory=list)

    # -- helpers -----------------------------------------------------------------------------------
    def where(self, line: Line) -> str:
        return f"example {self.example.name}, examples/README.md:{line.number}: `{line.text}`"

    def expand(self, text: str, line: Line) -> str:
        for placeholder, value in self.placeholders.items():
            text = text.replace(placeholder, value)

        def var(m: re.Match[str]) -> str:
            if m.group(1) not in self.vars:
                raise Failed(f"{self.where(line)}: ${{{m.group(1)}}} has no value (no `let` before this line)")
            return self.vars[m.group(1)]
        return VAR.sub(var, text)

    def cli(self, line: Line, *args: str) -> None:
        """A step's command, which must succeed."""
        result = lab(self.directory, *args)
        if result.returncode != 0:
            raise Failed(f"{self.where(line)}: `elastivol lab {shlex.join(args)}` exited {result.returncode}:\n"
                         f"{result.stdout}{result.stderr}")

    # -- values --------------------------------------------------------------------------------------
    def jsonpath(self, kind: str, name: str, template: str) -> tuple[str | None, str]:
        """(value or None, what was seen). NAME ``*`` reads every object of the kind (a List, ``{.items[...]}``)."""
        result = lab(self.directory, "get", kind, *([] if name == "*" else [name]), "-o", f"jsonpath={template}")
        if result.returncode != 0:
            return None, f"`lab get {kind} {name}` failed: {(result.stderr or result.stdout).strip()}"
        if result.stdout == "":
            return None, f"{template} of {kind} {name} finds nothing"
        return result.stdout, f"{template} of {kind} {name} is {result.stdout!r}"

    def exec_value(self, pod: str, command: str) -> tuple[str | None, str]:
        argv = shlex.split(command)
        result = lab(self.directory, "exec", pod, "--", *argv)
        if result.returncode != 0:
            return None, (f"`exec {pod} -- {command}` exited {result.returncode}: "
                          f"{(result.stderr or result.stdout).strip()[-500:]}")
        value = result.stdout.removesuffix("\n")
        return value, f"`exec {pod} -- {command}` printed {value!r}"

    def absent(self, kind: str, name: str) -> Observed:
        result = lab(self.directory, "get", kind, name, "-o", "json")
        if result.returncode != 0 and "NotFound" in result.stderr:
            return Observed(True, f"{kind} {name} is gone")
        if result.returncode != 0:
            return Observed(False, f"`lab get {kind} {name}` failed: {result.stderr.strip()}")
        obj = json.loads(result.stdout)
        meta = obj.get("metadata") or {}
        return Observed(False, f"{kind} {name} still exists (deletionTimestamp {meta.get('deletionTimestamp')}, "
                               f"finalizers {meta.get('finalizers')}, status {json.dumps(obj.get('status'))})")

    def refused(self, path: str, text: str) -> Observed:
        """`lab apply -f PATH` fails, and says TEXT."""
        result = lab(self.directory, "apply", "-f", path)
        said = (result.stderr + result.stdout).strip()
        if result.returncode == 0:
            return Observed(False, f"`lab apply -f {path}` succeeded: {said}")
        return Observed(text in said, f"`lab apply -f {path}` exited {result.returncode}: {said}")

    def event(self, kind: str, name: str, reason: str, text: str) -> Observed:
        got = lab(self.directory, "get", kind, name, "-o", "json")
        if got.returncode != 0:
            return Observed(False, f"`lab get {kind} {name}` failed: {got.stderr.strip()}")
        uid = json.loads(got.stdout)["metadata"].get("uid")
        events = lab(self.directory, "get", "events", "-o", "json")
        if events.returncode != 0:
            return Observed(False, f"`lab get events` failed: {events.stderr.strip()}")
        loaded = json.loads(events.stdout)
        items = loaded.get("items", [loaded]) if isinstance(loaded, dict) else loaded
        mine = [e for e in items if (e.get("involvedObject") or {}).get("uid") == uid]
        if any(e.get("reason") == reason and text in (e.get("message") or "") for e in mine):
            return Observed(True, "")
        return Observed(False, f"events of {kind} {name}: " + (
            "; ".join(f"{e.get('reason')}: {e.get('message')!r}" for e in mine) or "none"))

    # -- conditions ----------------------------------------------------------------------------------
    def condition(self, text: str, line: Line) -> Callable[[], Observed]:
        """A function that evaluates CONDITION once."""
        if text.startswith("exec "):
            head, op, value = split_operator(text, line, self)
            pod, sep, command = head[len("exec "):].partition(" -- ")
            if not sep or not pod.strip() or not command.strip():
                raise Failed(f"{self.where(line)}: expected `exec POD -- COMMAND OP VALUE`")
            return lambda: compare(*self.exec_value(pod.strip(), command), op, value)
        words = text.split()
        if words[0] == "refused":
            path, sep, wanted = text[len("refused "):].partition(" contains ")
            if not sep or not path.strip() or not wanted.strip():
                raise Failed(f"{self.where(line)}: expected `refused PATH contains TEXT`")
            return lambda: self.refused(path.strip(), wanted.strip())
        if words[0] == "event":
            parts = text.split(None, 5)
            if len(parts) != 6 or parts[4] != "contains":
                raise Failed(f"{self.where(line)}: expected `event KIND NAME REASON contains TEXT`")
            _, kind, name, reason, _, wanted = parts
            return lambda: self.event(kind, name, reason, wanted.strip())
        if len(words) == 3 and words[2] == "absent":
            return lambda: self.absent(words[0], words[1])
        parts = text.split(None, 4)
        if len(parts) < 4 or parts[3] not in OPS:
            raise Failed(f"{self.where(line)}: expected `KIND NAME JSONPATH OP VALUE`, `KIND NAME absent`, "
                         "`event ...` or `exec ...`")
        kind, name, template, op = parts[:4]
        value = parts[4].strip() if len(parts) == 5 else ""
        return lambda: compare(*self.jsonpath(kind, name, template), op, value)

    def retry(self, line: Line, check: Callable[[], Observed], what: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while True:
            observed = check()
            if observed.holds:
                return
            if time.monotonic() > deadline:
                raise Failed(f"{self.where(line)}: {what} did not hold within {TIMEOUT:.0f}s; "
                             f"observed: {observed.seen}\n{self.snapshot()}")
            time.sleep(POLL)

    def snapshot(self) -> str:
        """The lab's objects, for the failure message."""
        got = lab(self.directory, "get", "pvc,pv,pod,volumeattachment,volumesnapshot", "-o", "wide")
        return f"lab get pvc,pv,pod,volumeattachment,volumesnapshot -o wide:\n{got.stdout}{got.stderr}"

    # -- steps ---------------------------------------------------------------------------------------
    def needs_volume(self, line: Line) -> None:
        from elastivol.client import CsiClient, volume_capability
        from elastivol.units import parse_size

        parts = line.text.split()
        if len(parts) != 5 or parts[1] != "volume":
            raise Failed(f"{self.where(line)}: expected `needs: volume PLACEHOLDER SIZE ZONE`")
        _, _, placeholder, size, zone = parts
        name = f"lab-test-{self.example.name}-{placeholder.lower()}"
        socket = self.directory / "sockets" / "block-controller.sock"
        try:
            with CsiClient(f"unix://{socket}", timeout=120) as client:
                volume = client.create_volume(name, parse_size(size), zone=zone, parameters={"type": "gp3"},
                                              cap=volume_capability(fs_type="ext4"))
        except Exception as exc:
            raise Failed(f"{self.where(line)}: CreateVolume failed: {exc}") from exc
        self.placeholders[placeholder] = volume.volume_id
        self.volumes.append(volume.volume_id)

    def apply(self, line: Line, path: str) -> None:
        source = ROOT / path
        if not self.placeholders and not self.vars:
            self.cli(line, "apply", "-f", path)
            return
        # Copy what is applied to a temp dir, with the placeholders and the `let` values replaced.
        target = Path(tempfile.mkdtemp(dir=self.work))
        files = sorted(source.glob("*.yaml")) if path.endswith("/") else [source]
        if not files or not all(f.is_file() for f in files):
            raise Failed(f"{self.where(line)}: {path} has no .yaml file to apply")
        for f in files:
            (target / f.name).write_text(self.expand(f.read_text(), line))
        self.cli(line, "apply", "-f", str(target) + "/" if path.endswith("/") else str(target / files[0].name))

    def let(self, line: Line, rest: str) -> None:
        var, eq, source = rest.partition(" = ")
        var = var.strip()
        if not eq or not re.fullmatch(r"[A-Z][A-Z0-9_]*", var):
            raise Failed(f"{self.where(line)}: expected `let VAR = KIND NAME JSONPATH` or `let VAR = exec POD -- COMMAND`")
        source = source.strip()
        fetch: Callable[[], tuple[str | None, str]]
        if source.startswith("exec "):
            pod, sep, command = source[len("exec "):].partition(" -- ")
            if not sep:
                raise Failed(f"{self.where(line)}: expected `let VAR = exec POD -- COMMAND`")
            fetch = lambda: self.exec_value(pod.strip(), command)  # noqa: E731
        else:
            parts = source.split()
            if len(parts) != 3:
                raise Failed(f"{self.where(line)}: expected `let VAR = KIND NAME JSONPATH`")
            fetch = lambda: self.jsonpath(*parts)  # noqa: E731
        captured: list[str] = []

        def check() -> Observed:
            value, seen = fetch()
            if value:
                captured.append(value)
                return Observed(True, seen)
            return Observed(False, seen)
        self.retry(line, check, f"capturing {var} (a non-empty value)")
        self.vars[var] = captured[-1]

    def run_line(self, line: Line) -> None:
        keyword, colon, rest = line.text.partition(":")
        if not colon:
            raise Failed(f"{self.where(line)}: not an instruction")
        rest = rest.strip()
        if keyword == "needs":
            if rest.startswith("zones "):
                return  # the lab_dir fixture brought the lab up with them (see zones_of)
            self.needs_volume(line)
            return
        rest = self.expand(rest, line)
        if keyword == "expect":
            self.retry(line, self.condition(rest, line), "the expectation")
            return
        if keyword != "step":
            raise Failed(f"{self.where(line)}: unknown instruction {keyword!r}")
        verb, _, args = rest.partition(" ")
        args = args.strip()
        if verb == "apply":
            self.apply(line, args)
        elif verb == "delete":
            kind, name = args.split()
            self.cli(line, "delete", kind, name, "--no-wait")
        elif verb == "patch":
            kind, name, patch = args.split(None, 2)
            json.loads(patch)  # the grammar's JSON: a malformed line is the README's error, said here
            self.cli(line, "patch", kind, name, "-p", patch)
        elif verb == "let":
            self.let(line, args)
        elif verb == "sleep":
            time.sleep(float(args))
        elif verb == "wait":
            self.retry(line, self.condition(args, line), "the precondition (step: wait)")
        else:
            raise Failed(f"{self.where(line)}: unknown step {verb!r}")

    # -- clean-up ------------------------------------------------------------------------------------
    def release_volumes(self) -> list[str]:
        """Delete the volumes that `needs:` made, once nothing uses them (their PVs are Retain).

        The objects that use them go first: the pods, the claims, then the PVs."""
        from elastivol.client import CsiClient
        from elastivol.csi import csi_pb2

        problems: list[str] = []
        if not self.volumes:
            return problems
        pvs = json.loads(lab(self.directory, "get", "pv", "-o", "json").stdout or '{"items": []}')
        items = pvs.get("items", [pvs]) if isinstance(pvs, dict) else pvs
        mine = [pv for pv in items if ((pv.get("spec") or {}).get("csi") or {}).get("volumeHandle") in self.volumes]
        retained = [pv for pv in mine if pv["spec"].get("persistentVolumeReclaimPolicy", "Retain") == "Retain"]
        claims = {(pv["spec"].get("claimRef") or {}).get("name") for pv in mine} - {None}
        pods = json.loads(lab(self.directory, "get", "pod", "-o", "json").stdout or '{"items": []}')
        for pod in pods.get("items", [pods]) if isinstance(pods, dict) else pods:
            if any((v.get("persistentVolumeClaim") or {}).get("claimName") in claims
                   for v in pod["spec"].get("volumes") or []):
                lab(self.directory, "delete", "pod", pod["metadata"]["name"])
        for claim in claims:
            lab(self.directory, "delete", "pvc", str(claim))
        for pv in mine:
            lab(self.directory, "delete", "pv", pv["metadata"]["name"])
        handles_retained = {pv["spec"]["csi"]["volumeHandle"] for pv in retained}
        unused = set(self.volumes) - {pv["spec"]["csi"]["volumeHandle"] for pv in mine}
        socket = self.directory / "sockets" / "block-controller.sock"
        with CsiClient(f"unix://{socket}", timeout=60) as client:
            for volume_id in sorted(handles_retained | unused):
                try:
                    client.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=volume_id), timeout=60)
                except Exception as exc:
                    problems.append(f"DeleteVolume {volume_id}: {exc}")
        return problems


def split_operator(text: str, line: Line, run: Run) -> tuple[str, str, str]:
    """The last ` OP ` of the line splits it into (head, OP, VALUE)."""
    best = -1
    op = ""
    for candidate in OPS:
        at = text.rfind(f" {candidate} ")
        if at > best:
            best, op = at, candidate
    if best < 0:
        raise Failed(f"{run.where(line)}: no operator ({', '.join(OPS)}) on the line")
    return text[:best], op, text[best + len(op) + 2:].strip()


def compare(value: str | None, seen: str, op: str, wanted: str) -> Observed:
    if value is None:
        return Observed(False, seen)
    if op == "=":
        ok = value == wanted
    elif op == "!=":
        ok = value != wanted
    elif op == "contains":
        ok = wanted in value
    else:
        ok = re.search(wanted, value) is not None
    return Observed(ok, f"{seen}; wanted {op} {wanted!r}")


@pytest.mark.parametrize("example", [
    pytest.param(e, marks=[pytest.mark.lab_zones(z)] if (z := zones_of(e)) else []) for e in EXAMPLES
], ids=[e.name for e in EXAMPLES])
def test_example(example: Example, lab_dir: Path) -> None:
    assert example.lines, f"example {example.name}: its ```lab block is empty"
    work = Path(tempfile.mkdtemp(prefix="elastivol-example-", dir="/var/tmp"))
    run = Run(example, lab_dir, work)
    try:
        needs = [line for line in example.lines if line.text.startswith("needs:")]
        for line in needs:
            run.run_line(line)
        for line in example.lines:
            if line not in needs:
                run.run_line(line)
    finally:
        try:
            problems = run.release_volumes()
        finally:
            shutil.rmtree(work, ignore_errors=True)
    assert not problems, f"example {example.name}: cleaning up its volumes failed: " + "; ".join(problems)


def test_readme_has_the_examples() -> None:
    """Every example directory has a block, and every block parses into known instructions."""
    names = {e.name for e in EXAMPLES}
    dirs = {p.name for p in (ROOT / "examples").iterdir() if p.is_dir()}
    assert dirs <= names, f"examples without a ```lab block in examples/README.md: {sorted(dirs - names)}"
    for e in EXAMPLES:
        for line in e.lines:
            keyword = line.text.partition(":")[0]
            assert keyword in ("needs", "step", "expect"), f"examples/README.md:{line.number}: `{line.text}`"
