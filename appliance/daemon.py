"""`classcam run`: wires the hardware, the roster, the pad link, the state machine and the
uploader, and runs them under systemd (Type=notify, with a watchdog) until SIGTERM.

At start-up the spool is recovered before anything else runs: half-made directories go, a
recording cut off by a crash gets its manifest, and the upload journal is brought into line with
the files on disk; then whatever is waiting is uploaded.

On SIGTERM or SIGINT a recording is stopped properly (devices closed, then the LED off). A death
by SIGKILL is covered by the unit file's `ExecStopPost=classcam led-off`.
"""
from __future__ import annotations

import asyncio
import logging
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance import __version__, journal
from appliance.clock import synchronised_check
from appliance.config import Config, ConfigError, load
from appliance.device_key import DeviceKeyError, load_or_create
from appliance.hardware import Hardware, make_hardware
from appliance.memory import lock_memory, swap_problem
from appliance.notice import Notices, NoticeUnavailable
from appliance.padlink import PadLink, SerialPad, serve_socket
from appliance.recordings import recover_interrupted
from appliance.roster import Roster
from appliance.unit import State, Unit
from uploader.client import UploadClient, UploadSettings
from uploader.spool import Spool
from uploader.worker import STEP_S, Uploader
from appliance.health.checks import active_checks
from appliance.health.doctor import serve_doctor, socket_path
from appliance.health.journal import hold_lines, stop_holding
from appliance.health.notify import Supervisor
from appliance.health.service import HealthService

MB = 1024 * 1024
# While recovery reads files the upload journal lost, each one read extends systemd's start
# timeout by this much: a slow start goes on while it makes progress, a wedged one is stopped.
START_EXTEND_USEC = 30_000_000

log = logging.getLogger("classcam")

EX_CONFIG = 78  # sysexits: configuration error; systemd shows it, IT reads the line above it


def run(config_path: Path, hw_kind: str) -> int:
    """Run the daemon; returns the process exit status."""
    journal.setup()
    # P4: a core dump would put plaintext frames on disk. The unit file says LimitCORE=0 too;
    # this holds even if the daemon is started some other way.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # P4: locked memory is never swapped, whatever the kernel (appliance/memory.py). If it
    # cannot be locked, the unit arms only while no unencrypted swap is active.
    checks: dict[str, Callable[[], str | None]] = {}
    not_locked = lock_memory()
    if not_locked is not None:
        log.warning("memory: cannot lock the daemon's memory (%s); recording is refused while "
                    "unencrypted swap is active", not_locked)
        checks["memory"] = swap_problem
    try:
        config = load(config_path)
    except ConfigError as e:
        log.error("config: %s", e)
        return EX_CONFIG
    try:
        client = upload_client(config, allow_plain_http=hw_kind == "sim")
        # The health clock's probe has a client (and connection) of its own: it must not wait
        # behind a long upload, nor share a session across threads.
        probe = upload_client(config, allow_plain_http=hw_kind == "sim")
    except ValueError as e:
        log.error("config: %s: %s", config_path, e)
        return EX_CONFIG
    try:
        hw = make_hardware(hw_kind, config)
    except Exception as e:
        log.error("hardware: cannot start the %s backends: %s", hw_kind, e)
        return 1
    try:
        return asyncio.run(serve(config, hw, client, probe, checks))
    except DeviceKeyError as e:
        log.error("device key: %s", e)
        return 1
    finally:
        stop_holding()
        hw.close()


def upload_client(config: Config, allow_plain_http: bool = False) -> UploadClient | None:
    """The client for `[upload]`, or None when no account server is configured."""
    u = config.upload
    if not u.url:
        return None
    return UploadClient(UploadSettings(
        url=u.url, ca_bundle=u.ca_bundle, client_cert=u.client_cert, client_key=u.client_key,
        connect_timeout_s=u.connect_timeout_s, read_timeout_s=u.read_timeout_s,
        chunk_bytes=max(1, int(u.chunk_mb * MB)), bandwidth_bps=u.bandwidth_kbps * 1000 // 8,
        allow_plain_http=allow_plain_http))


async def serve(config: Config, hw: Hardware, client: UploadClient | None = None,
                probe: UploadClient | None = None,
                checks: dict[str, Callable[[], str | None]] | None = None) -> int:
    """Run until SIGTERM/SIGINT; the unit is left idle with the recording LED off. `checks`
    must hold before every arm besides the sound devices' (see `Unit.ready`)."""
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    supervisor = Supervisor()
    roster = Roster(config.device.roster_dir)
    spool = Spool(config.device.state_dir / "spool")
    device_key = await asyncio.to_thread(_recover, spool, config, supervisor)
    notices, notice_error = None, None
    try:
        notices = await asyncio.to_thread(Notices.synthesise, config.notice,
                                            config.audio.mode == "none")
    except NoticeUnavailable as e:
        notice_error = str(e)
    clock_synchronised = synchronised_check(config.clock.synchronised)
    unit = Unit(config, roster, spool, hw, notices, device_key, clock_synchronised,
                notices_error=notice_error, checks=checks)
    await unit.ready()  # at start-up too: a fault shows (and is in the journal) at once
    # From here on, as soon as anyone could use the unit, every journal line waits for the next
    # health tick (P9); `run` writes out what is held however `serve` ends.
    held = hold_lines()
    uploader = None
    if client is not None:
        def upload_changed(status) -> None:
            try:
                loop.call_soon_threadsafe(unit.upload_changed, status)
            except RuntimeError:
                pass  # the loop has closed: the daemon is exiting

        uploader = Uploader(spool, client, config.upload.retry_max_s, config.upload.hold_s,
                            on_change=upload_changed, probe_client=probe)
        uploader.start()
    link = PadLink(unit)
    server = await serve_socket(link, config.pad)
    serial_pad = None
    if config.pad.serial is not None:  # absent or failing, it is a fault, not a reason to stop
        serial_pad = asyncio.create_task(SerialPad(link, config.pad).run())
    # A press acts on release, so that a long one can mean something else: held for
    # `gpio.long_press_s` while recording, the button pauses (`Unit.long_press`).
    long_press = threading.Event()

    def button_held() -> None:
        long_press.set()
        asyncio.run_coroutine_threadsafe(unit.long_press(), loop)

    def button_released() -> None:
        if not long_press.is_set():
            asyncio.run_coroutine_threadsafe(unit.press("button"), loop)

    hw.button.hold_time = config.gpio.long_press_s
    hw.button.when_pressed = long_press.clear
    hw.button.when_held = button_held
    hw.button.when_released = button_released
    services: list[asyncio.Future[None]] = [asyncio.ensure_future(start(unit))
                                             for start in hw.tasks]

    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    publisher = None
    if config.health.broker:  # paho-mqtt is imported only by a unit that publishes
        from appliance.health.publisher import HealthPublisher
        publisher = HealthPublisher(config.health, config.device.id, __version__)
        publisher.start()  # paho's thread; the unit works the same with or without a broker
    supervisor.ready()
    supervisor.status(f"running; health every {config.health.period_s:g} s")
    stall_s = uploader_stall_s(config)

    def healthy() -> bool:
        # A unit wedged in a state (say `stopping`) is not healthy, whatever the uploader does.
        # While a recording runs the uploader is not judged: restarting would cut the lesson.
        if not unit.healthy():
            return False
        return uploader is None or unit.state is not State.IDLE or uploader.alive(stall_s)

    watchdog = asyncio.create_task(supervisor.watchdog(healthy))
    log.info("ready: device %s, %d teacher(s) enrolled", config.device.id, len(roster.cards()))
    health = HealthService(config, unit, hw, spool, uploader, publisher, held, supervisor,
                           teacher_ids=lambda: [c.teacher_id for c in roster.cards()],
                           clock_synchronised=clock_synchronised, started=started)
    health_task = asyncio.create_task(health.run())
    doctor = await serve_doctor(socket_path(config), lambda: active_checks(health.view()))
    try:
        await stopping.wait()
        supervisor.stopping()
        await unit.shutdown()
    finally:
        hw.button.when_pressed = hw.button.when_held = hw.button.when_released = None
        for task in (*services, watchdog, health_task):
            task.cancel()
        await asyncio.gather(health_task, return_exceptions=True)
        held.stop()
        if publisher is not None:
            # Bounded: a connection attempt to a broker that is away must not hold up the exit
            # (paho's thread is a daemon thread).
            try:
                await asyncio.wait_for(asyncio.to_thread(publisher.stop), 3.0)
            except TimeoutError:
                pass
        server.close()
        if serial_pad is not None:
            serial_pad.cancel()
            await asyncio.wait([serial_pad])
        if doctor is not None:
            doctor.close()
        socket_path(config).unlink(missing_ok=True)
        config.pad.socket.unlink(missing_ok=True)
        if uploader is not None:
            # A file cut off mid-send is resumed at the next start (P7); no need to wait long.
            await asyncio.to_thread(uploader.stop, 2.0)
        if uploader is None or not uploader.running:
            for c in (client, probe):
                if c is not None:
                    c.close()
            spool.close()  # else the process exit ends the uploader's request; SQLite is safe
    return 0


def _recover(spool: Spool, config: Config, supervisor: Supervisor
             ) -> Ed25519PrivateKey:
    """Recover the spool after a crash (run off the event loop); returns the device key.
    Only files the upload journal lost track of are read, so this takes the same time however
    much waits for upload; while there are such files, each one read buys the start-up
    another `START_EXTEND_USEC` from systemd (TimeoutStartSec in the unit file)."""
    spool.recover()
    # First: a segment the journal missed goes before its manifest.
    spool.reconcile(hashed=lambda size: supervisor.extend_timeout(START_EXTEND_USEC))
    device_key = load_or_create(config.device.state_dir)
    recover_interrupted(spool, config.device.id, device_key)
    return device_key


def uploader_stall_s(config: Config) -> float:
    """How long the idle unit lets its uploader show no sign of life before the watchdog stops
    being pinged. The uploader shows one at every wait step and whenever bytes of a file move,
    however slowly (a bandwidth cap, a long segment); between two signs lies at most one call's
    connect and read timeout, so twice that, plus a wait step, is a hang."""
    return 2 * (config.upload.connect_timeout_s + config.upload.read_timeout_s) + STEP_S

