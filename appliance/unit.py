"""The unit's state machine: idle -> armed -> starting -> recording -> stopping -> idle, and
recording -> paused -> starting -> recording (a pause closes camera and microphone; the same
teacher's fresh token resumes into the same recording).

    unit = Unit(config, roster, spool, hw, notices)
    await unit.press()                  # the button, or the pad's record key: arms (or stops)
    result = await unit.present(jwt)    # a start token for the current challenge
    result = await unit.present_assertion(msg["assertion"])   # or a security key's
    await unit.stop()                   # needs no token, works in every state (P8)
    result = unit.mark()                # the teacher bookmarks this moment of the recording
    result = unit.pause()               # close the devices; press() then arms a resume
    result = unit.preview(deliver)      # IT: arm for one zoned frame, taken on a teacher's token

Everything runs on one asyncio loop; slow hardware calls go to threads. One task owns a recording
session from the LED going on to the LED going off, so the order LED -> notice -> devices ->
close -> LED off is the order of the code in `_session`, whatever stops it.

Privacy: the journal gets faults and token refusals (reason only), never who recorded or when a
recording started or stopped (P9). Only the simulator's `trace` sees those.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable

from appliance.config import Config
from appliance import recordings
from appliance.hardware import Hardware, capture_settings
from appliance.notice import Notices, NoticeUnavailable, Sound
from appliance.roster import Roster
from appliance.assertion import COUNTERS_FILE, AssertionVerifier, SignCounters
from appliance.token import Challenges, Reason, StartToken, TokenRejected, TokenVerifier
from capture.devices import CaptureError
from capture.pipeline import Camera, CaptureSettings, EncodingCamera, Recorder
from formats.manifest import SegmentEntry, sidecar_file
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from led_indicator.guard import CaptureGuard, StillOpen
from led_indicator.lights import LedFault
from led_indicator.patterns import Pattern
from uploader.spool import Recording, Spool
from uploader.worker import UploadStatus

log = logging.getLogger(__name__)

LED_CHECK_S = 0.2
MB = 1024 * 1024
FAULT = "fault"  # how a reason for a session's end that is a fault begins
# Beyond its own length (the arm timeout, the notice, the maximum recording) a state may last
# this long for slow hardware: opening devices, sealing the last segment, writing the manifest.
# Longer than that, the unit is wedged and `healthy()` says so.
STATE_GRACE_S = 60.0
# A recording starts only with room for at least this many times `capture.min_free_mb`, the room
# below which a running one stops: so a start is not followed at once by a stop.
START_ROOM_FACTOR = 2


class State(enum.StrEnum):
    IDLE = "idle"
    ARMED = "armed"
    STARTING = "starting"
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPING = "stopping"


@dataclass(frozen=True)
class Result:
    """The answer to a token, as the pad shows it."""

    ok: bool
    reason: str


class Unit:
    """The recorder. Methods must be called on the loop that runs it."""

    def __init__(self, config: Config, roster: Roster, spool: Spool, hw: Hardware,
                 notices: Notices | None, device_key: Ed25519PrivateKey,
                 clock_synchronised: Callable[[], bool] = lambda: False,
                 notices_error: str | None = None,
                 checks: dict[str, Callable[[], str | None]] | None = None):
        self.config = config
        self.state = State.IDLE
        self._state_since = time.monotonic()
        self.fault: str | None = None
        self.fault_reason: str | None = None  # for the health report, read on its tick only
        self._hw = hw
        self._roster = roster
        self._spool = spool
        self._notices = notices
        self._notices_error = notices_error
        self._device_key = device_key
        self._ended_by: str | None = None  # why the session ends; the first reason stands
        # Who made the newest recording, kept for when it has left the spool by upload and its
        # maker asks to discard it. Memory only: the SD card keeps no record of who recorded
        # beyond what the upload needs (P9), so after a restart only a recording still here
        # has a known maker.
        _, newest = spool.newest()
        self._maker_of_newest = newest.teacher_id if newest is not None else None
        self._notice_s = 0.0 if notices is None else max(
            s.seconds for s in (notices.start, notices.stop, notices.discard, notices.full))
        self._verifier = TokenVerifier(roster, config.device.id, clock_synchronised,
                                       config.clock.skew_s)
        self._assertions = AssertionVerifier(roster, config.device.id, clock_synchronised,
                                             config.clock.skew_s)
        self._counters = SignCounters(config.device.state_dir / COUNTERS_FILE)
        self._challenges = Challenges(config.recording.arm_timeout_s)
        self._guard = CaptureGuard(hw.recording_led)
        self._challenge_listeners: list[Callable[[str, float], None]] = []
        self._arm_timer: asyncio.TimerHandle | None = None
        self._session_task: asyncio.Task | None = None
        self._recorder: Recorder | None = None  # while recording: its media time, for marks
        # The session's bookmarks, seconds from its start: in memory until its encrypted
        # manifest is written, nowhere else (P9).
        self._bookmarks: list[float] = []
        self._stop_requested = asyncio.Event()
        # Pause and resume: a pause request, the session's teacher (only they resume), whether a
        # resume challenge is out, the resume token once accepted, and the pauses so far as
        # (start, end) seconds on the lesson's clock, for the manifest only (P9).
        self._pause_requested = asyncio.Event()
        self._session_teacher: str | None = None
        self._resume_armed = False
        self._resumed = asyncio.Event()
        self._pauses: list[tuple[float, float]] = []
        # `classcam zones preview`: while armed for it, where its one PNG (or why none) goes.
        self._preview_to: Callable[[bytes | None, str], None] | None = None
        self._cancel_notice = threading.Event()
        self._upload = UploadStatus(spool.backlog(), None)
        # What must hold before the unit arms, by the component a failure is a fault of: the
        # speaker and microphone (P3), and `checks` given by the daemon (memory, P4). Each
        # returns None, or why not; each may block, so it runs off the loop.
        self._checks = {"audio": hw.check_audio, **(checks or {})}
        self._checking = False
        if notices is None:
            self._set_fault("speaker", notices_error or "notice unavailable")
        self._show()

    # -- what the button, the pad link and signals call ------------------------------------

    def on_challenge(self, listener: Callable[[str, float], None]) -> None:
        """Call `listener(nonce, expires_in)` whenever the unit is armed."""
        self._challenge_listeners.append(listener)

    @property
    def challenge(self) -> str | None:
        """The current challenge while armed (or armed to resume a paused recording)."""
        return self._challenges.current if self._armed() else None

    def _armed(self) -> bool:
        return self.state is State.ARMED or (self.state is State.PAUSED and self._resume_armed)

    async def press(self, source: str = "button") -> None:
        """A press of the record button (or the pad's record key): arm when idle, disarm when
        armed, stop when starting or recording, arm a resume when paused."""
        self._hw.trace("press", source=source, state=self.state.value)
        if self.state is State.IDLE:
            if self._checking:
                return  # a press while the devices are checked is the same press
            if await self.ready() and self.state is State.IDLE:
                self._arm()
        elif self.state is State.PAUSED:
            self._arm(resume=True)
        elif self.state is State.ARMED:
            self._disarm()
        elif self.state in (State.STARTING, State.RECORDING):
            await self.stop()

    async def stop(self, why: str = "stop pressed") -> None:
        """Stop whatever is happening. Needs no token (P8); returns once the LED is off."""
        if self.state is State.ARMED:
            self._disarm()
            return
        task = self._session_task
        if task is None:
            return
        self._hw.trace("stop_requested", why=why)
        self._end_because(why)
        self._stop_requested.set()
        self._cancel_notice.set()
        await asyncio.shield(task)

    async def present(self, raw: str | bytes) -> Result:
        """Check a token from the pad link; start (or discard) if it is good."""
        try:
            token = self._verifier.verify(raw)
            self._check_resumer(token)
            self._challenges.consume(token.nonce, armed=self._armed())
        except TokenRejected as e:
            return self._refuse(e)
        return await self._accepted(token)

    async def present_assertion(self, assertion: object) -> Result:
        """Check a security key's assertion from the pad link (the "assertion" object of its
        message, appliance/assertion.py); start (or discard) if it is good."""
        try:
            token, use = self._assertions.verify(assertion)
            self._check_resumer(token)
            self._challenges.check(token.nonce, armed=self._armed())
            self._counters.check(use)
        except TokenRejected as e:
            return self._refuse(e)
        # The counter is kept before the challenge is used: a counter the key signed may always
        # be remembered, and nothing is awaited between using the challenge and STARTING.
        try:
            await asyncio.to_thread(self._counters.write, self._counters.remember(use))
        except OSError as e:
            return self._refuse(TokenRejected(Reason.COUNTER_NOT_INCREASING,
                                              f"cannot keep the counter: {e}"))
        try:
            self._challenges.consume(token.nonce, armed=self._armed())
        except TokenRejected as e:
            return self._refuse(e)
        return await self._accepted(token)

    def _check_resumer(self, token: StartToken) -> None:
        """While paused, only the teacher who started the recording resumes it, with a start
        token. Checked before the challenge is used, so that the teacher can still resume.
        (Every way a token is presented calls this before using the challenge.)"""
        if self.state is not State.PAUSED:
            return
        if token.teacher_id != self._session_teacher:
            raise TokenRejected(Reason.PAUSED_BY_ANOTHER)
        if token.action != "start":
            raise TokenRejected(Reason.WRONG_ACTION, "a paused recording resumes on start")

    async def _accepted(self, token: StartToken) -> Result:
        """Resume, preview, start or discard for a token that passed every check."""
        self._cancel_arm_timer()
        self._hw.trace("token", ok=True, reason="", nonce=token.nonce, act=token.action,
                       teacher=token.teacher_id)
        if self.state is State.PAUSED:
            # No await before STARTING: the session resumes with the notice (P3).
            self._resume_armed = False
            self._set_state(State.STARTING)
            self._resumed.set()
            return Result(True, "recording")
        preview, self._preview_to = self._preview_to, None
        if token.action == "discard":
            if preview is not None:
                preview(None, "a discard token takes no preview")
            return await self._discard(token)
        if self._notices is None:
            self._set_state(State.IDLE)
            self._set_fault("speaker", self._notices_error or "notice unavailable")
            if preview is not None:
                preview(None, "cannot speak the notice")
            return Result(False, "cannot speak the notice")
        # No await between accepting the token and STARTING: a press in between would be lost.
        room = self.room()  # cheap: one journal query and a statvfs
        if preview is None and room < START_ROOM_FACTOR * self.config.capture.min_free_mb * MB:
            return await self._refuse_full(room)
        self._stop_requested.clear()
        self._cancel_notice.clear()
        self._ended_by = None
        self._set_state(State.STARTING)
        if preview is not None:
            self._session_task = asyncio.create_task(self._preview_session(preview))
            return Result(True, "zones preview")
        self._session_task = asyncio.create_task(self._session(token))
        return Result(True, "recording")

    async def ready(self) -> bool:
        """Run the checks that must hold before the unit arms (at start-up and before every
        arm). A failed one is a fault: one journal line with its reason (once, while it
        lasts), the status light, and False: the unit does not arm. A check that passes again
        clears its fault."""
        self._checking = True
        try:
            for component, check in self._checks.items():
                reason = await asyncio.to_thread(check)
                if reason is not None:
                    if (self.fault, self.fault_reason) != (component, reason):
                        self._set_fault(component, reason)
                    self._hw.trace("refused", why=component)
                    return False
                self.clear_fault(component)
            return True
        finally:
            self._checking = False

    def mark(self) -> Result:
        """Bookmark the current moment of the recording (the pad's mark key). It goes into the
        recording's encrypted manifest only, as seconds of media from its start; no journal
        line. Refused, storing nothing, when not recording."""
        recorder = self._recorder
        if self.state is not State.RECORDING or recorder is None:
            return Result(False, "not recording")
        # The next frame the camera gives is this moment (the sensor's time, so dropped frames
        # do not shift it).
        seconds = recorder.media_time_s
        self._bookmarks.append(seconds)
        self._hw.trace("bookmark", seconds=seconds)
        return Result(True, "marked")

    def preview(self, deliver: Callable[[bytes | None, str], None]) -> Result:
        """Arm for a zones preview (IT's `classcam zones preview`): like a recording, it needs a
        teacher's start token for the challenge, the LED and the notice come first (P1-P3);
        then the camera alone opens for one frame, the privacy zones are filled in it, and
        `deliver(png, "")` gets it as PNG bytes, or `deliver(None, reason)` why not. Nothing
        of it is written on the unit. Refused unless idle."""
        if self.state is not State.IDLE:
            return Result(False, f"busy: {self.state.value}")
        self._arm()
        self._preview_to = deliver
        return Result(True, "armed for a zones preview: a teacher presents a token at the pad")

    async def long_press(self) -> None:
        """The record button held down: pauses while recording, otherwise a press."""
        if self.state is State.RECORDING:
            self.pause()
        else:
            await self.press()

    def pause(self) -> Result:
        """Pause the recording (the pad's pause key): camera and microphone close, the recording
        LED goes dark, the room hears so; the recording stays open for the same teacher to
        resume with a fresh token. Refused when not recording."""
        if self.state is not State.RECORDING:
            return Result(False, "not recording")
        self._hw.trace("pause_requested")
        self._pause_requested.set()
        return Result(True, "pausing")

    def report_fault(self, component: str, reason: str) -> None:
        """A part outside the recording chain (the pad link) failed: one journal line, and the
        status light shows the fault while the unit is idle."""
        self._set_fault(component, reason)

    def clear_fault(self, component: str) -> None:
        """`component` works again: its fault, if it is the one shown, is cleared."""
        if self.fault == component:
            self.fault = None
            log.info("fault cleared: %s", component)
            self._hw.trace("fault_cleared", component=component)
            self._show()

    def upload_changed(self, status: UploadStatus) -> None:
        """The uploader's news: what waits, and whether uploads work (for the status light)."""
        self._upload = status
        self._show()

    def room(self) -> int:
        """Bytes the spool may still grow by: the disk's free space or what is left of the
        spool's quota, whichever is less."""
        # The quota is a float in the config: whole bytes here, so the fault says "12 MB".
        quota_left = int(self.config.spool.quota_mb * MB) - self._spool.used_bytes()
        return min(self._hw.free_bytes(self._spool.directory), quota_left)

    async def shutdown(self) -> None:
        """On SIGTERM: stop any recording properly, then leave the LED dark."""
        await self.stop("shutting down")
        self._cancel_arm_timer()

    def healthy(self, now: float | None = None) -> bool:
        """Whether the state machine still moves: idle, or in another state no longer than that
        state can last (`now` is a `time.monotonic()` reading; the present by default), and no
        device left open after a close that failed. The daemon stops feeding systemd's watchdog
        when not, so a unit wedged in `stopping`, or with a camera that will not close, is
        restarted: `led-off` darkens the LED and the next start finishes the recording (P7)."""
        now = time.monotonic() if now is None else now
        if self.state is State.IDLE and self._guard.open_devices:
            # A device that would not close (its close is bounded) may still be capturing: the
            # LED stays lit (P2) and only a restart ends it, so systemd is let to restart us.
            return False
        return now - self._state_since <= self._longest(self.state)

    # -- the recording session --------------------------------------------------------------

    async def _session(self, token: StartToken) -> None:
        opened = False    # a device was asked to open: the room is told when it stops
        captured = False  # a recorder ran: the recording has something to finish
        recording = None
        recorder = None
        self._bookmarks = []
        self._pauses = []
        self._pause_requested.clear()
        self._session_teacher = token.teacher_id
        try:
            self.fault = None
            await asyncio.to_thread(self._guard.light)
            assert self._notices is not None, "present() starts no session without notices"
            if not await self._speak(self._notices.start, cancellable=True):
                return
            # Fsyncs and a synchronous SQLite commit: off the loop, so a stop pressed meanwhile
            # is heard, and acted on below once the recording exists.
            self._maker_of_newest = None
            recording = await asyncio.to_thread(self._spool.new_recording, token.teacher_id,
                                                token.recipient, self.config.audio.mode)
            self._maker_of_newest = token.teacher_id
            deadline = time.monotonic() + self.config.recording.max_minutes * 60
            lesson_start = None  # the lesson's clock: from its first frame, pauses counted
            start_us, index = 0, 1
            sealed_into = recording

            def on_sealed(entry: SegmentEntry) -> None:
                self._spool.add(sealed_into, entry.file, entry.sha256)

            while True:
                # No microphone with `[audio] mode = "none"`: video only.
                for device in (d for d in (self._hw.camera, self._hw.microphone) if d is not None):
                    if self._stop_requested.is_set():
                        return
                    opened = True
                    await asyncio.to_thread(self._guard.open, device)
                if self._stop_requested.is_set():
                    return
                recorder = Recorder(self._hw.camera, self._hw.microphone, recording.path,
                                    token.recipient, capture_settings(self.config),
                                    free_bytes=lambda path: self.room(),
                                    on_sealed=on_sealed,
                                    first_index=index, start_us=start_us)
                recorder.start()
                captured = True
                lesson_start = lesson_start or time.monotonic()
                self._recorder = recorder
                self._set_state(State.RECORDING)
                self._hw.trace("recording", recording=recording.recording_id)
                await self._record_until_stopped(recorder, deadline)
                if not self._pause_requested.is_set() or self._stop_requested.is_set():
                    break
                # Pause: the devices close and the LED goes dark as at a stop; the segments
                # sealed so far stay, and the next capture numbers and times on from them.
                self._pause_requested.clear()
                self._recorder = None
                paused_at = time.monotonic() - lesson_start
                paused, recorder = recorder, None  # closed here, not again at the end
                await self._close_devices(paused)
                if paused.error is not None or self._guard.open_devices:
                    return
                start_us = round(paused.media_time_s * 1e6)  # the next frame's time
                index = await asyncio.to_thread(_next_index, recording.path)
                resumed = await self._paused()
                # A pause ended by a stop or its maximum length is listed too: to the end.
                self._pauses.append((round(paused_at, 3),
                                     round(time.monotonic() - lesson_start, 3)))
                if not resumed:
                    return
                await asyncio.to_thread(self._guard.light)
                if not await self._speak(self._notices.start, cancellable=True):
                    return
        except LedFault as e:
            self._fail("led", str(e))
        except NoticeUnavailable as e:
            self._fail("speaker", str(e))
        except CaptureError as e:
            self._fail("capture", str(e))
        except Exception as e:  # an unexpected error still ends in the safe state below
            log.exception("recording failed")
            self._fail("internal", f"{type(e).__name__}: {e}")
        finally:
            await self._end_session(recording, recorder, speak=opened, captured=captured)

    async def _preview_session(self, deliver: Callable[[bytes | None, str], None]) -> None:
        """One frame with the zones filled, as PNG bytes to `deliver`; the LED, the notice and
        the guard as for a recording, the camera alone."""
        png: bytes | None = None
        why = "stopped"
        opened = False
        try:
            self.fault = None
            await asyncio.to_thread(self._guard.light)
            assert self._notices is not None, "present() starts no session without notices"
            if not await self._speak(self._notices.start, cancellable=True):
                return
            if self._stop_requested.is_set():
                return
            opened = True
            await asyncio.to_thread(self._guard.open, self._hw.camera)
            self._set_state(State.RECORDING)
            settings = capture_settings(self.config)
            png = await asyncio.to_thread(_zoned_png, self._hw.camera, settings)
            self._hw.trace("zones_preview", bytes=len(png))
        except LedFault as e:
            why = f"led: {e}"
            self._fail("led", str(e))
        except NoticeUnavailable as e:
            why = f"speaker: {e}"
            self._fail("speaker", str(e))
        except CaptureError as e:
            why = f"capture: {e}"
            self._fail("capture", str(e))
        except Exception as e:
            log.exception("zones preview failed")
            why = f"internal: {type(e).__name__}: {e}"
            self._fail("internal", why)
        finally:
            self._set_state(State.STOPPING)
            await self._close_devices(None)
            if opened and self._notices is not None:
                try:
                    await self._speak(self._notices.stop, cancellable=False)
                except NoticeUnavailable as e:
                    self._set_fault("speaker", str(e))
            self._session_task = None
            self._set_state(State.IDLE)
            deliver(png, "" if png is not None else why)

    async def _paused(self) -> bool:
        """Wait, paused, for the same teacher's resume token (True), a stop or the maximum
        pause (False). The room hears that the recording is paused."""
        self._resumed.clear()
        self._resume_armed = False
        self._set_state(State.PAUSED)
        self._hw.trace("paused")
        if self._notices is not None and self._notices.paused is not None:
            try:
                await self._speak(self._notices.paused, cancellable=True)
            except NoticeUnavailable as e:
                self._set_fault("speaker", str(e))
        waits = [asyncio.ensure_future(self._stop_requested.wait()),
                 asyncio.ensure_future(self._resumed.wait())]
        try:
            await asyncio.wait(waits, timeout=self.config.recording.max_pause_minutes * 60,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self._resumed.is_set() and not self._stop_requested.is_set():
            return True
        if self.state is State.PAUSED and self._resume_armed:
            self._disarm_resume()
        if not self._stop_requested.is_set():
            self._hw.trace("stop_requested", why="maximum pause")
            self._end_because("maximum pause")
        return False

    async def _record_until_stopped(self, recorder: Recorder, deadline: float) -> None:
        while not (self._stop_requested.is_set() or self._pause_requested.is_set()):
            try:
                await asyncio.wait_for(self._stop_requested.wait(), LED_CHECK_S)
            except TimeoutError:
                pass
            await asyncio.to_thread(self._guard.check)  # LedFault stops the recording
            if recorder.error is not None:
                # A new exception: raising the recorder's own would tie this frame's traceback
                # (and so the recorder and its encoders) to it until the cycle collector runs.
                raise CaptureError(str(recorder.error))
            if time.monotonic() >= deadline:
                self._hw.trace("stop_requested", why="maximum length")
                self._end_because("maximum length")
                self._pause_requested.clear()
                return

    async def _end_session(self, recording: Recording | None, recorder: Recorder | None,
                           speak: bool, captured: bool) -> None:
        """Close the devices, darken the LED, finish the recording, tell the room. Whatever
        fails on the way, the unit ends idle, with the reason on the status light and in the
        journal; the LED stays lit only while a device may still be open (P2)."""
        self._recorder = None
        self._set_state(State.STOPPING)
        try:
            await self._close_devices(recorder)
            if recording is not None:
                await self._close_recording(recording, captured=captured)
            if speak and self._notices is not None:
                try:
                    await self._speak(self._notices.stop, cancellable=False)
                except NoticeUnavailable as e:
                    self._set_fault("speaker", str(e))
        except Exception as e:
            log.exception("stopping failed")
            self._set_fault("internal", f"{type(e).__name__}: {e}")
        finally:
            self._session_task = None
            self._session_teacher = None
            self._resume_armed = False
            self._set_state(State.IDLE)

    async def _close_devices(self, recorder: Recorder | None) -> None:
        try:
            if recorder is not None:
                # Stop reading and seal the last segment before the devices close under it.
                await asyncio.to_thread(recorder.stop)
                if recorder.error is not None and not self._ended_by_fault():
                    self._fail("capture", str(recorder.error))
        finally:
            try:
                await asyncio.to_thread(self._guard.close_all)
            except StillOpen as e:
                self._set_fault("capture", f"could not close {e}; recording LED stays on")
            try:
                await asyncio.to_thread(self._guard.darken)
            except StillOpen:
                pass  # already reported: the LED stays lit while a device may be open (P2)
            except LedFault as e:
                self._set_fault("led", str(e))

    async def _close_recording(self, recording: Recording, captured: bool) -> None:
        ended_by = self._ended_by or "stop"
        try:
            if not captured:
                # Nothing was captured: leave no trace of who tried to record.
                self._maker_of_newest = None
                await asyncio.to_thread(self._spool.forget, recording.recording_id)
                return
            entries = await asyncio.to_thread(recordings.finish, recording, self._spool,
                                              self.config.device.id, self._device_key, ended_by,
                                              audio_overflows=_overflows(self._hw),
                                              bookmarks=tuple(self._bookmarks),
                                              audio_mode=self.config.audio.mode,
                                              pauses=tuple(self._pauses))
        except Exception as e:  # e.g. the disk is full (ENOSPC)
            # What was sealed stays queued for upload (P7); the next start finishes the
            # recording (`recover_interrupted` writes the manifest, or removes an empty one).
            self._set_fault("storage", f"could not finish a recording ({_why(e)}); it is "
                                       "finished at the next start")
            return
        self._hw.trace("manifest", recording=recording.recording_id, segments=len(entries),
                       ended_by=ended_by)

    def _fail(self, component: str, reason: str) -> None:
        self._end_because(f"{FAULT}: {component}: {reason}")
        self._set_fault(component, reason)

    def _end_because(self, why: str) -> None:
        """Note why the session ends, for its manifest. The first reason stands: a stop that
        comes while a fault is ending the session does not hide the fault. Only a fault replaces
        a stop, as the recorder may have failed before the stop reached it."""
        if self._ended_by is None or (why.startswith(FAULT) and not self._ended_by_fault()):
            self._ended_by = why

    def _ended_by_fault(self) -> bool:
        return self._ended_by is not None and self._ended_by.startswith(FAULT)

    async def _speak(self, sound: Sound, cancellable: bool) -> bool:
        cancel = self._cancel_notice if cancellable else threading.Event()
        completed = await asyncio.to_thread(self._hw.speaker.play, sound, cancel)
        return completed and not (cancellable and self._stop_requested.is_set())

    async def _discard(self, token: StartToken) -> Result:
        """Discard the last recording made on this unit, if the token's teacher made it.
        Anyone else is told "nothing to discard", whatever became of the recording: the answer
        must not tell them whether, or that, someone recorded (P9)."""
        made, latest = self._spool.newest()  # no await before leaving ARMED (see present)
        self._set_state(State.IDLE)
        maker: str | None
        if latest is not None:
            maker = latest.teacher_id
        else:
            # It left the spool: if its maker is known (it was made, or found here, since the
            # start) and it was neither discarded nor forgotten, it was uploaded.
            maker = self._maker_of_newest if made else None
        if maker != token.teacher_id:
            return self._refuse(TokenRejected(Reason.NOTHING_TO_DISCARD))
        if latest is None:
            # All of it is in the account already; the device cannot delete there (P6).
            return self._refuse(TokenRejected(Reason.ALREADY_UPLOADED))
        self._maker_of_newest = None
        uploaded = await asyncio.to_thread(self._spool.discard, latest.recording_id)
        self._hw.trace("discarded", recording=latest.recording_id, already_uploaded=uploaded)
        if self._notices is not None:
            try:
                await self._speak(self._notices.discard, cancellable=False)
            except NoticeUnavailable as e:
                self._set_fault("speaker", str(e))
        if uploaded:
            # The unit cannot delete from the account (P6); the teacher can, with their own key.
            return Result(True, f"discarded; {uploaded} file(s) already uploaded stay in your "
                                "account until you delete them there")
        return Result(True, "discarded")

    async def _refuse_full(self, room: int) -> Result:
        """The spool cannot take a recording: say so to the room and the pad, start nothing."""
        self._set_state(State.IDLE)
        self._set_fault("storage", f"only {max(room, 0) // MB} MB of room for recordings; "
                                   "a new one cannot start until uploads make room")
        self._hw.trace("refused", why="storage full")
        assert self._notices is not None, "present() refuses without notices before this"
        try:
            await self._speak(self._notices.full, cancellable=False)
        except NoticeUnavailable as e:
            self._set_fault("speaker", str(e))
        return Result(False, "storage full")

    # -- arming -----------------------------------------------------------------------------

    def _arm(self, resume: bool = False) -> None:
        nonce = self._challenges.issue()
        ttl = self.config.recording.arm_timeout_s
        if resume:
            self._resume_armed = True
        else:
            self._set_state(State.ARMED)
        self._hw.trace("challenge", nonce=nonce)
        self._cancel_arm_timer()
        self._arm_timer = asyncio.get_running_loop().call_later(ttl, self._arm_expired, nonce)
        for listener in list(self._challenge_listeners):
            listener(nonce, ttl)

    def _arm_expired(self, nonce: str) -> None:
        if self.state is State.ARMED and self._challenges.current in (None, nonce):
            self._hw.trace("arm_timeout")
            self._disarm()
        elif self._armed() and self._challenges.current in (None, nonce):
            self._hw.trace("arm_timeout")
            self._disarm_resume()

    def _disarm_resume(self) -> None:
        """The resume challenge ends unused; the recording stays paused."""
        self._cancel_arm_timer()
        self._challenges.cancel()
        self._resume_armed = False

    def _disarm(self) -> None:
        if self._preview_to is not None:
            self._preview_to(None, "no token came: the preview is cancelled")
            self._preview_to = None
        self._cancel_arm_timer()
        self._challenges.cancel()
        self._set_state(State.IDLE)

    def _cancel_arm_timer(self) -> None:
        if self._arm_timer is not None:
            self._arm_timer.cancel()
            self._arm_timer = None

    # -- state, faults and the status light --------------------------------------------------

    def _refuse(self, e: TokenRejected) -> Result:
        log.warning("token refused: %s", e.reason)
        self._hw.trace("token", ok=False, reason=str(e.reason))
        return Result(False, str(e.reason))

    def _set_state(self, state: State) -> None:
        if state is not self.state:
            self.state = state
            self._state_since = time.monotonic()
            self._hw.trace("state", state=state.value)
        self._show()

    def _longest(self, state: State) -> float:
        """How long `state` may last before the unit counts as wedged."""
        if state is State.IDLE:
            return float("inf")
        own = {State.ARMED: self.config.recording.arm_timeout_s,
               State.STARTING: self._notice_s,
               State.RECORDING: self.config.recording.max_minutes * 60,
               State.PAUSED: self.config.recording.max_pause_minutes * 60,
               State.STOPPING: self._notice_s}[state]
        return own + STATE_GRACE_S

    def _set_fault(self, component: str, reason: str) -> None:
        self.fault, self.fault_reason = component, reason
        log.error("fault: %s: %s", component, reason)
        self._hw.trace("fault", component=component, reason=reason)
        self._show()

    def _show(self) -> None:
        if self.state is not State.IDLE:
            pattern = Pattern[self.state.name]
        elif self.fault is not None:
            pattern = Pattern.FAULT
        elif self._upload.backlog.files and self._upload.failing is not None:
            pattern = Pattern.UPLOAD_RETRYING
        elif self._upload.backlog.files:
            pattern = Pattern.UPLOADING
        else:
            pattern = Pattern.IDLE
        self._hw.status_led.show(pattern)


def _overflows(hw: Hardware) -> int:
    """Times the microphone lost samples (none without one)."""
    return 0 if hw.microphone is None else hw.microphone.overflows


def _zoned_png(camera: Camera, settings: CaptureSettings) -> bytes:
    """The camera's next picture with the privacy zones filled as in a recording, as PNG. A
    camera that encodes its own frames (the Pi's) fills them before its encoder, as when it
    records (picamera2's pre_callback), and the picture is its first keyframe, decoded."""
    import io

    from capture.zones import fill_zones
    if isinstance(camera, EncodingCamera):
        picture = _first_picture(camera, settings)
    else:
        picture = camera.read(settings.stall_timeout_s).picture
        fill_zones(picture, settings.zones)
    out = io.BytesIO()
    picture.to_image().save(out, format="PNG")
    return out.getvalue()


def _first_picture(camera: EncodingCamera, settings: CaptureSettings):
    """The first picture `camera`'s own encoder gives, decoded (within the stall timeout)."""
    import av

    from capture.encoders import PacketOutput
    output = PacketOutput()
    decoder = av.CodecContext.create("h264", "r")
    deadline = time.monotonic() + settings.stall_timeout_s
    camera.start_encoding(output, settings)
    try:
        while (left := deadline - time.monotonic()) > 0:
            packet = output.next(left)
            if packet is None:
                break
            for picture in decoder.decode(packet):
                return picture.reformat(format="yuv420p")
        raise CaptureError(f"camera: no picture within {settings.stall_timeout_s:g} s")
    finally:
        camera.stop_encoding()
        output.end()


def _next_index(directory) -> int:
    """The index the next segment of the recording in `directory` takes: after every sealed
    one (each has its entry beside it)."""
    index = 1
    while (directory / sidecar_file(index)).exists():
        index += 1
    return index


def _why(e: Exception) -> str:
    """An error's reason without the path an OSError carries (it names the recording)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
