"""`classcam doctor`: the health checks on demand, for IT after an install or when a unit shows a
fault; one line per check with its fix, exit status 1 if any check fails.

    $ sudo classcam doctor
    camera: ok
    speaker: fault: speaker: simulated amplifier failure
      fix: check the speaker and amplifier, ...

The running daemon owns the hardware, so the checks run inside it: the command connects to
`<runtime_dir>/doctor.sock` (mode 0600: root and the daemon's user), and the daemon answers
with `health.checks.active_checks` as JSON lines, then closes. The socket reads nothing from
the client: connecting is the whole request, so nothing on it can start, stop or change a
recording (P1). It never opens camera or microphone and never sees a frame; while the unit is
busy it leaves camera, microphone, speaker and LED alone and reports them "in use".

Without a running daemon the command says so (a failure) and checks what it can alone: the
configuration, the clock, the room for recordings and the upload server.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
from dataclasses import asdict
from pathlib import Path
from collections.abc import Awaitable, Callable

from appliance.config import Config
from appliance.health.checks import FIXES, Check, clock_fault

log = logging.getLogger(__name__)

SOCKET_NAME = "doctor.sock"
ANSWER_TIMEOUT_S = 30.0
MB = 1024 * 1024


def socket_path(config: Config) -> Path:
    return config.device.runtime_dir / SOCKET_NAME


async def serve_doctor(path: Path, checks: Callable[[], Awaitable[list[Check]]]):
    """The daemon's side: answer each connection with `await checks()`, one JSON line each.
    Returns the server, or None (logged) if it cannot listen."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for check in await checks():
                writer.write(json.dumps(asdict(check)).encode() + b"\n")
            await asyncio.wait_for(writer.drain(), ANSWER_TIMEOUT_S)
        except (OSError, TimeoutError):
            pass  # the command went away
        finally:
            writer.close()

    old = os.umask(0o177)
    try:
        path.unlink(missing_ok=True)
        server = await asyncio.start_unix_server(answer, path=str(path))
        os.chmod(path, 0o600)
    except OSError as e:  # the unit records without it; `classcam doctor` will say so
        log.warning("doctor: cannot listen on %s: %s", path, e.strerror or e)
        return None
    finally:
        os.umask(old)
    return server


def doctor(config: Config, out=print) -> int:
    """The command: print every check, return 1 if any failed."""
    try:
        checks = _ask_daemon(socket_path(config))
    except OSError as e:
        checks = [Check("daemon", "fault", f"not running or not answering ({e.strerror or e})",
                        "systemctl start classcam; journalctl -u classcam")]
        checks += alone(config)
    for check in checks:
        out(line(check))
    return 1 if any(c.failed for c in checks) else 0


def line(check: Check) -> str:
    text = f"{check.name}: {check.state}"
    if check.reason:
        text += f": {check.reason}"
    if check.failed and check.fix:
        text += f"\n  fix: {check.fix}"
    return text


def alone(config: Config) -> list[Check]:
    """The checks that need no hardware, for a unit whose daemon is not running."""
    from appliance.clock import synchronised_check
    from appliance.daemon import upload_client
    results = []
    reason = clock_fault(config.clock.synchronised, synchronised_check(config.clock.synchronised))
    results.append(Check("clock", "fault", reason, FIXES["clock"]) if reason
                   else Check("clock", "ok"))
    try:
        free = shutil.disk_usage(config.device.state_dir).free
        room = (Check("storage", "ok") if free >= 2 * config.capture.min_free_mb * MB else
                Check("storage", "fault", f"only {free // MB} MB free", FIXES["storage"]))
    except OSError as e:
        room = Check("storage", "fault", f"{config.device.state_dir}: {e.strerror}",
                     "systemd-tmpfiles --create; check the SD card")
    results.append(room)
    try:
        client = upload_client(config)
    except ValueError as e:
        return results + [Check("server", "fault", str(e), FIXES["server"])]
    if client is None:
        return results + [Check("server", "fault", "no upload server configured ([upload] url)",
                                FIXES["server"])]
    from uploader.client import UploadError
    try:
        client.probe()
        results.append(Check("server", "ok"))
    except UploadError as e:
        results.append(Check("server", "fault", e.reason, FIXES["server"]))
    finally:
        client.close()
    return results


def _ask_daemon(path: Path) -> list[Check]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(ANSWER_TIMEOUT_S)
        s.connect(str(path))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [Check(**json.loads(raw)) for raw in data.splitlines() if raw.strip()]
