"""Faults and hostile peers against the unit's state machine (issue 13, items 8, 10, 13, 17):
a failure while finishing a recording does not wedge the unit; slow storage work stays off the
event loop and start-up does not read what waits for upload; the first reason a recording ended
is the one its manifest keeps; and another teacher's discard learns nothing (P8, P9).

Most tests run the state machine in-process on the simulator, where a fault can be injected at
an exact point; the discard test runs the real daemon and pad."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from collections.abc import Awaitable, Callable

import pytest

from appliance.config import load
from appliance.daemon import serve
from teacher_tools.keys import load_signing_key
from appliance.recordings import finish, recover_interrupted
from appliance.roster import TeacherCard
from appliance.token import mint
from appliance import unit as state_machine
from appliance.unit import State, Unit
from formats.manifest import MANIFEST_FILE, open_manifest, write_manifest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hwsim.factory import make_sim_hardware
from hwsim.invariants import check_all, device_intervals, led_intervals
from hwsim.lab import DEVICE_ID, PASSPHRASE
from led_indicator.patterns import Pattern
from tests.media import identity
from tests.test_systemd import _last
from formats.durable import sha256_file
from tests.inprocess import NOTICES, sim_unit
from uploader.spool import FileState, Spool

TEACHER = "t-evans"


# -- the in-process unit ------------------------------------------------------------------------

def _token(lab_template, unit: Unit, teacher: str = TEACHER, act: str = "start") -> str:
    files = lab_template.key_files(teacher)
    card = TeacherCard.parse(files.card.read_bytes())
    return mint(load_signing_key(files.signing_key, PASSPHRASE), teacher, DEVICE_ID,
                unit.challenge, card.recipient, action=act)


async def _until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def _record_a_segment(lab_template, unit: Unit, spool: Spool) -> None:
    """Start a recording and wait until it has sealed a segment."""
    await unit.press()
    assert (await unit.present(_token(lab_template, unit))).ok
    await _until(lambda: unit.state is State.RECORDING)
    await _until(lambda: any(f.name.startswith("seg-") for f in spool.files()))


def _in_process(scenario: Callable[[Path], Awaitable[None]]) -> None:
    with tempfile.TemporaryDirectory(prefix="cc-") as root:
        asyncio.run(scenario(Path(root)))


def _disk_full(path: Path) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


# -- item 8: a failure while finishing a recording ---------------------------------------------

class ManifestCannotBeQueued(Spool):
    """A spool whose disk fills up just as the manifest is queued."""

    def add(self, recording, name, sha256):
        if name == MANIFEST_FILE:
            raise _disk_full(recording.path / name)
        super().add(recording, name, sha256)


class CannotForget(Spool):
    """A spool that cannot remove a recording (the disk gives ENOSPC)."""

    def forget(self, recording_id):
        raise _disk_full(self.directory / recording_id)


def _ended_idle_dark_and_showing(hw, unit: Unit, component: str) -> list[dict]:
    events = list(hw.parts.timeline.events)
    states = [e["state"] for e in events if e["ev"] == "state"]
    assert states[-2:] == ["stopping", "idle"] and unit.state is State.IDLE
    assert led_intervals(events) and all(off != float("inf") for _, off in led_intervals(events))
    assert all(closed != float("inf") for _, _, closed in device_intervals(events))
    assert unit.fault == component and hw.parts.status_led.pattern is Pattern.FAULT
    assert check_all(events) == []
    return events


def test_a_manifest_that_cannot_be_queued_leaves_the_unit_idle_and_dark_showing_why(
        lab_template, caplog):
    async def scenario(root: Path) -> None:
        unit, hw, spool = sim_unit(lab_template, root, ManifestCannotBeQueued(root / "var" / "spool"))
        try:
            await _record_a_segment(lab_template, unit, spool)
            (recording,) = spool.recordings()
            await unit.press()  # stop: returns once the session is over, however it ended
            events = _ended_idle_dark_and_showing(hw, unit, "storage")
            (fault,) = [e for e in events if e["ev"] == "fault"]
            assert fault["component"] == "storage"
            assert "No space left on device" in fault["reason"]
            # The room is still told that recording stopped.
            stopping = events.index(next(e for e in events if e.get("state") == "stopping"))
            assert [(e["label"], e["completed"]) for e in events[stopping:]
                    if e["ev"] == "notice" and e["phase"] == "end"] == [("stop", True)]
            # Every sealed segment stays queued for upload (P7).
            sealed = sorted(p.name for p in recording.path.glob("seg-*.ts.age"))
            queued = spool.files(recording.recording_id)
            assert sealed and [f.name for f in queued] == sealed
            assert {f.state for f in queued} == {FileState.SEALED}
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()

        # The next start finishes the recording: its manifest lists every sealed segment.
        spool = Spool(root / "var" / "spool")
        try:
            spool.recover()
            spool.reconcile()
            recover_interrupted(spool, DEVICE_ID, Ed25519PrivateKey.generate())
            assert spool.knows(recording.recording_id, MANIFEST_FILE)
            manifest = open_manifest((recording.path / MANIFEST_FILE).read_bytes(),
                                     identity(lab_template))
            assert [s.file for s in manifest.segments] == sealed
        finally:
            spool.close()

    with caplog.at_level("ERROR"):
        _in_process(scenario)
    journal = caplog.text
    assert "fault: storage: could not finish a recording (No space left on device)" in journal
    assert "var/spool" not in journal  # the path names the recording (P9)


def test_a_recording_that_cannot_be_removed_still_leaves_the_unit_idle_and_dark(lab_template,
                                                                                 caplog):
    async def scenario(root: Path) -> None:
        unit, hw, spool = sim_unit(lab_template, root, CannotForget(root / "var" / "spool"))
        try:
            hw.parts.faults.set("camera")  # nothing is captured, so the recording is removed
            await unit.press()
            assert (await unit.present(_token(lab_template, unit))).ok
            await _until(lambda: unit.state is State.IDLE)
            events = _ended_idle_dark_and_showing(hw, unit, "storage")
            assert [e["component"] for e in events if e["ev"] == "fault"] == ["capture",
                                                                               "storage"]
            assert len(spool.recordings()) == 1
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()
        # The next start removes what holds nothing worth keeping.
        spool = Spool(root / "var" / "spool")
        try:
            recover_interrupted(spool, DEVICE_ID, Ed25519PrivateKey.generate())
            assert spool.recordings() == []
        finally:
            spool.close()

    with caplog.at_level("ERROR"):
        _in_process(scenario)
    assert "fault: storage: could not finish a recording (No space left on device)" in caplog.text


class WedgedManifest(Spool):
    """A spool whose storage hangs when the manifest is queued, until `release` is set."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.release = threading.Event()

    def add(self, recording, name, sha256):
        if name == MANIFEST_FILE:
            self.release.wait(30)
        super().add(recording, name, sha256)


def test_a_unit_wedged_in_stopping_is_not_healthy_beyond_its_bound(lab_template):
    async def scenario(root: Path) -> None:
        spool = WedgedManifest(root / "var" / "spool")
        unit, hw, spool = sim_unit(lab_template, root, spool)
        try:
            now = time.monotonic()
            assert unit.healthy() and unit.healthy(now + 24 * 3600)  # idle: always
            await _record_a_segment(lab_template, unit, spool)
            grace = state_machine.STATE_GRACE_S
            assert unit.healthy() and unit.healthy(time.monotonic() + grace)
            stop = asyncio.create_task(unit.press())
            await _until(lambda: unit.state is State.STOPPING)
            await asyncio.sleep(0.2)
            assert unit.state is State.STOPPING  # wedged
            wedged_at = time.monotonic()
            assert unit.healthy()  # a stop may take a while (sealing, the manifest) ...
            # ... but not for ever: then the daemon's watchdog goes quiet and systemd restarts.
            assert not unit.healthy(wedged_at + grace + NOTICES.stop.seconds + 1)
            spool.release.set()
            await stop
            assert unit.state is State.IDLE and unit.healthy(time.monotonic() + 24 * 3600)
        finally:
            spool.release.set()
            await unit.shutdown()
            spool.close()
            hw.close()

    _in_process(scenario)


# -- item 10: storage work off the event loop; start-up does not grow with the spool ------------

class SlowToCreate(Spool):
    """A spool whose new recording takes until `release` (fsyncs and a FULL-sync commit on a
    slow SD card)."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.creating = threading.Event()
        self.created = threading.Event()
        self.release = threading.Event()

    def new_recording(self, teacher_id, recipient, audio_mode=None):
        self.creating.set()
        self.release.wait(5)
        try:
            return super().new_recording(teacher_id, recipient, audio_mode)
        finally:
            self.created.set()


def test_a_stop_pressed_while_the_recording_is_being_created_is_heard_and_stops_it(
        lab_template):
    async def scenario(root: Path) -> None:
        spool = SlowToCreate(root / "var" / "spool")
        unit, hw, spool = sim_unit(lab_template, root, spool)
        try:
            await unit.press()
            assert (await unit.present(_token(lab_template, unit))).ok
            await _until(spool.creating.is_set)
            # The loop is free while the recording is created: the stop press is taken now.
            assert not spool.created.is_set(), "the event loop waited for the storage"
            stop = asyncio.create_task(unit.press())
            await asyncio.sleep(0.05)
            assert not stop.done() and unit.state is State.STARTING
            spool.release.set()
            await stop
            assert unit.state is State.IDLE
            events = list(hw.parts.timeline.events)
            assert device_intervals(events) == []  # nothing opened after the stop
            assert spool.recordings() == []        # and no trace of who tried to record
            (on, off), = led_intervals(events)
            assert off != float("inf") and check_all(events) == []
        finally:
            spool.release.set()
            await unit.shutdown()
            spool.close()
            hw.close()

    _in_process(scenario)


_OPENED: list[str] | None = None


def _count_opens(event: str, args: tuple) -> None:
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


def _fill_spool(lab, recordings: int, segment_bytes: int) -> tuple[dict[str, int], Path]:
    """A spool of `recordings` finished recordings of three segments each, all known to the
    upload journal, and one more whose manifest the journal lost (a crash between writing and
    queueing it). Returns every sealed file's size, and that manifest."""
    card = TeacherCard.parse(lab.key_files(TEACHER).card.read_bytes())
    key = Ed25519PrivateKey.generate()
    spool = Spool(lab.spool_dir)
    try:
        for _ in range(recordings):
            rec = spool.new_recording(TEACHER, card.recipient)
            for index in (1, 2, 3):
                path = rec.path / f"seg-{index:06d}.ts.age"
                path.write_bytes(os.urandom(segment_bytes))
                spool.add(rec, path.name, sha256_file(path))
            finish(rec, spool, DEVICE_ID, key, "stop pressed")
        lost = spool.new_recording(TEACHER, card.recipient)
        write_manifest(lost.path, recording_id=lost.recording_id, teacher_id=TEACHER,
                       device_id=DEVICE_ID, recipient=card.recipient, start=lost.start,
                       end=lost.start, complete=True, ended_by="stop pressed", device_key=key)
    finally:
        spool.close()
    sizes = {str(p): p.stat().st_size for p in lab.spool_dir.glob("*/*.age")}
    return sizes, lost.path / MANIFEST_FILE


async def _start_daemon(lab) -> None:
    """Run the real daemon's `serve` in this process until its control socket answers."""
    config = load(lab.config_path)
    hw = make_sim_hardware(config)
    daemon = asyncio.create_task(serve(config, hw))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert not daemon.done(), daemon.result()
            try:
                reader, writer = await asyncio.open_unix_connection(str(lab.control_socket))
                writer.write(b'{"cmd": "status"}\n')
                reply = json.loads(await reader.readline())
                writer.close()
                if reply["ok"] and reply["state"] == "idle":
                    return
            except OSError:
                pass
            assert time.monotonic() < deadline, "the daemon did not come up"
            await asyncio.sleep(0.02)
    finally:
        daemon.cancel()
        try:
            await daemon
        except asyncio.CancelledError:
            pass
        hw.close()


def test_start_up_reads_only_what_the_upload_journal_lost_however_much_waits(lab_template,
                                                                             short_dir):
    global _OPENED
    sys.addaudithook(_count_opens)  # sees every file the process opens, whoever opens it
    read = {}
    for recordings in (1, 12):
        lab = lab_template.copy(short_dir / str(recordings))
        sizes, lost = _fill_spool(lab, recordings, segment_bytes=256 * 1024)
        _OPENED = []
        try:
            asyncio.run(_start_daemon(lab))
            opened = set(_OPENED)
        finally:
            _OPENED = None
        read[recordings] = sum(size for path, size in sizes.items() if path in opened)
        # What the journal lost is read and queued; nothing it knew is read again.
        assert {p for p in opened if p in sizes} == {str(lost)}
        assert read[recordings] == sizes[str(lost)]
        spool = Spool(lab.spool_dir)
        try:
            assert spool.knows(lost.parent.name, MANIFEST_FILE)
            assert len(spool.files()) == 4 * recordings + 1
        finally:
            spool.close()
        assert sum(sizes.values()) > 3 * 256 * 1024 * recordings
    print(f"bytes read at start-up: {read[1]} with 1 recording waiting, {read[12]} with 12")


def test_a_start_that_must_read_lost_files_tells_systemd_it_is_progressing(lab_template,
                                                                          short_dir, monkeypatch):
    lab = lab_template.copy(short_dir)
    _fill_spool(lab, 2, segment_bytes=1024)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = lab.run_dir / "notify.sock"
    listener.bind(str(path))
    listener.settimeout(0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        asyncio.run(_start_daemon(lab))
        messages = []
        while True:
            try:
                messages.append(listener.recv(4096).decode())
            except BlockingIOError:
                break
    finally:
        listener.close()
    extends = [m for m in messages if m.startswith("EXTEND_TIMEOUT_USEC=")]
    assert len(extends) == 1  # one file the journal lost, one extension
    assert messages.index(extends[0]) < messages.index("READY=1")


def test_the_unit_file_bounds_start_up():
    timeout = _last("TimeoutStartSec")
    assert timeout is not None and timeout not in ("0", "infinity"), timeout


# -- item 13: the first reason a recording ended is the one its manifest keeps -------------------

@pytest.mark.parametrize("fault", ["led", "microphone_error"])
@pytest.mark.parametrize("late_stop", ["pad", "sigterm"])
def test_a_stop_while_a_fault_ends_the_recording_leaves_the_fault_in_the_manifest(
        lab_template, fault, late_stop):
    async def scenario(root: Path) -> None:
        unit, hw, spool = sim_unit(lab_template, root)
        loop = asyncio.get_running_loop()
        stops: list[asyncio.Future] = []
        trace = hw.trace

        def stop_while_stopping(event: str, **fields) -> None:
            trace(event, **fields)
            if event == "state" and fields["state"] == "stopping":
                # The stop lands while the fault is ending the session.
                stop = (unit.stop("stop from pad") if late_stop == "pad" else unit.shutdown())
                loop.call_soon(lambda: stops.append(asyncio.ensure_future(stop)))

        try:
            await _record_a_segment(lab_template, unit, spool)
            hw.trace = stop_while_stopping
            hw.parts.faults.set(fault)
            await _until(lambda: unit.state is State.IDLE and bool(stops))
            await asyncio.gather(*stops)
            events = list(hw.parts.timeline.events)
            (recording,) = spool.recordings()
            manifest = open_manifest((recording.path / MANIFEST_FILE).read_bytes(),
                                     identity(lab_template))
        finally:
            hw.parts.faults.set(fault, False)
            await unit.shutdown()
            spool.close()
            hw.close()
        component = "led" if fault == "led" else "capture"
        assert manifest.body["ended_by"].startswith(f"fault: {component}: ")
        # The stop did arrive while the session was ending, before the manifest was written.
        kinds = [(e["ev"], e.get("state") or e.get("why")) for e in events
                 if e["ev"] in ("state", "stop_requested", "manifest")]
        stopping = kinds.index(("state", "stopping"))
        asked = kinds.index(("stop_requested", "stop from pad" if late_stop == "pad"
                             else "shutting down"))
        assert stopping < asked < kinds.index(("manifest", None))

    _in_process(scenario)


# -- item 17: another teacher's discard learns nothing -------------------------------------------

def _discard(unit, teacher: str) -> dict:
    unit.control("press")
    unit.wait_state("armed")
    pin = unit.lab.teachers[teacher]
    result = unit.control("pin", teacher=teacher, pin=pin, act="discard")["result"]
    unit.wait_state("idle")
    return result


NOTHING = {"type": "result", "ok": False, "reason": "nothing to discard"}


def test_another_teachers_discard_is_told_nothing_before_and_after_the_upload(lab):
    with lab.account() as server, lab.daemon() as unit:
        server.faults.set("refuse")
        assert unit.lesson(TEACHER, seconds=0.5)["ok"]
        # Still on the unit: only its maker could discard it.
        assert _discard(unit, "t-jones") == NOTHING
        assert len(lab.spooled()) == 1
        server.faults.clear("refuse")
        unit.wait_uploaded(60)
        # It has left the unit for the account: the other teacher still hears nothing of it.
        assert _discard(unit, "t-jones") == NOTHING
        assert _discard(unit, TEACHER) == {
            "type": "result", "ok": False,
            "reason": "already uploaded: delete it from your account"}
        assert len(server.stored(TEACHER)) == 1


def test_after_a_restart_the_maker_of_a_recording_still_waiting_is_told_once_it_is_uploaded(lab):
    with lab.account() as server:
        server.faults.set("refuse")
        with lab.daemon() as unit:
            assert unit.lesson(TEACHER, seconds=0.5)["ok"]
        with lab.daemon() as unit:
            assert len(lab.spooled()) == 1
            server.faults.clear("refuse")
            unit.wait_uploaded(60)
            assert _discard(unit, "t-jones") == NOTHING
            assert _discard(unit, TEACHER)["reason"] == (
                "already uploaded: delete it from your account")
