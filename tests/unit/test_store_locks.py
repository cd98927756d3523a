from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from elastivol import ids
from elastivol.errors import Aborted
from elastivol.locks import InFlight
from elastivol.store import RecordStore


def test_records_round_trip_atomically(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "volumes", "volume", ids.is_volume_id)
    vid = ids.new_id("vol")
    store.put(vid, {"id": vid, "name": "a"})
    assert store.get(vid) == {"id": vid, "name": "a"}
    assert store.find("name", "a") == {"id": vid, "name": "a"}
    payload = json.loads((tmp_path / "volumes" / f"{vid}.json").read_text())
    assert payload["schema"] == 1 and payload["kind"] == "volume"
    assert [p for p in os.listdir(tmp_path / "volumes") if p.endswith(".tmp")] == []
    assert store.delete(vid) and not store.delete(vid)
    assert store.get(vid) is None


def test_other_processes_writes_are_seen(tmp_path: Path) -> None:
    a = RecordStore(tmp_path / "v", "volume", ids.is_volume_id)
    b = RecordStore(tmp_path / "v", "volume", ids.is_volume_id)
    vid = ids.new_id("vol")
    a.put(vid, {"id": vid, "name": "x"})
    assert b.find("name", "x") is not None


def test_bad_records_are_reported_not_fatal(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "v", "volume", ids.is_volume_id)
    good = ids.new_id("vol")
    store.put(good, {"id": good})
    (tmp_path / "v" / f"{ids.new_id('vol')}.json").write_text("{torn")
    (tmp_path / "v" / f"{ids.new_id('vol')}.json").write_text(json.dumps({"schema": 99, "kind": "volume", "data": {}}))
    (tmp_path / "v" / "../../etc.json").resolve()
    assert [r["id"] for r in store.all()] == [good]
    reasons = " ".join(p.reason for p in store.problems)
    assert "unreadable" in reasons and "schema 99" in reasons


def test_malformed_ids_never_become_paths(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "v", "volume", ids.is_volume_id)
    with pytest.raises(Exception, match="malformed"):
        store.put("../escape", {})


def test_ids_have_exact_formats() -> None:
    for prefix, check in (("vol", ids.is_volume_id), ("snap", ids.is_snapshot_id), ("fs", ids.is_filesystem_id),
                          ("fsap", ids.is_access_point_id)):
        made = ids.new_id(prefix)
        assert check(made) and len(made) == len(prefix) + 1 + 17
        assert not check(made + "0") and not check(made.upper()) and not check("../" + made)


@pytest.mark.parametrize(("other_process", "refusal"), [
    (False, "already in progress"),  # the same registry: the in-process claim refuses
    (True, "another elastivol process"),  # a separate registry on the same pool: the file lock refuses
], ids=["same-process", "other-process"])
def test_inflight_aborts_the_second_caller(tmp_path: Path, other_process: bool, refusal: str) -> None:
    first = InFlight(tmp_path / "locks")
    second = InFlight(tmp_path / "locks") if other_process else first
    with first.hold("vol-1"):
        with pytest.raises(Aborted, match=refusal):
            with second.hold("vol-1"):
                pass
        with second.hold("vol-2"):
            pass
    with second.hold("vol-1"):
        pass


def test_inflight_under_threads(tmp_path: Path) -> None:
    inflight = InFlight(tmp_path / "locks")
    inside = 0
    peak = 0
    aborted = 0
    mutex = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        nonlocal inside, peak, aborted
        barrier.wait()
        for _ in range(50):
            try:
                with inflight.hold("vol-same"):
                    with mutex:
                        inside += 1
                        peak = max(peak, inside)
                    with mutex:
                        inside -= 1
            except Aborted:
                with mutex:
                    aborted += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 1


def test_run_keeps_the_key_until_cancelled_work_ends(tmp_path: Path) -> None:
    """A caller whose deadline expires leaves; its work goes on and keeps the key until it ends."""
    import asyncio

    inflight = InFlight(tmp_path / "locks")
    release = threading.Event()
    finished: list[str] = []

    def slow() -> str:
        release.wait(10)
        finished.append("done")
        return "result"

    async def scenario() -> None:
        first = asyncio.ensure_future(inflight.run_in_thread(["vol-1"], slow, what="Slow"))
        await asyncio.sleep(0.05)
        first.cancel()  # what grpc.aio does to a handler whose deadline expired
        with pytest.raises(asyncio.CancelledError):
            await first
        assert inflight.busy() == ["vol-1"], "the work still runs, so its key stays held"
        assert [w.what for w in inflight.running()] == ["Slow"]
        with pytest.raises(Aborted):
            await inflight.run_in_thread(["vol-1"], lambda: "second")
        release.set()
        assert await inflight.drain(5) == []
        assert finished == ["done"] and inflight.busy() == []
        assert await inflight.run_in_thread(["vol-1"], lambda: "retry") == "retry"

    asyncio.run(scenario())


def test_run_releases_the_key_when_work_fails(tmp_path: Path) -> None:
    import asyncio

    inflight = InFlight(tmp_path / "locks")

    def boom() -> None:
        raise ValueError("broken")

    async def scenario() -> None:
        with pytest.raises(ValueError):
            await inflight.run_in_thread(["vol-2"], boom)
        assert inflight.busy() == []
        # And another process sharing the pool can take it too (the flock was closed).
        with InFlight(tmp_path / "locks").hold("vol-2"):
            pass

    asyncio.run(scenario())
