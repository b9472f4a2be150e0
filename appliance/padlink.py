"""The local PIN pad link (DESIGN.md section 4): newline-delimited JSON over a Unix socket or a
serial device.

    pad -> unit  {"type": "arm"}                  same as pressing the record button
                 {"type": "token", "token": JWT}  a start or discard token
                 {"type": "assertion", "assertion": {...}}
                                                  one from a security key (formats/assertion.py)
                 {"type": "stop"}                 stop, no token needed (P8)
                 {"type": "mark"}                 bookmark this moment of the recording
                 {"type": "pause"}                pause the recording (devices close); then
                                                  "arm" arms a resume for the same teacher
                 {"type": "preview"}              IT's `classcam zones preview`: arm for one
                                                  zoned frame, taken on a teacher's token
    unit -> pad  {"type": "challenge", "device": ID, "nonce": N, "expires_in": 60}
                 {"type": "result", "ok": bool, "reason": str}
                 {"type": "preview", "ok": bool, "png": BASE64, "reason": str}
                                                  to the connection that asked, only

Nothing else is understood: a line that is not one of these, or longer than `MAX_LINE` bytes, is
answered with `ok: false` and changes nothing. There is no message that starts capture without a
token that `Unit.present` (or, for a security key, `Unit.present_assertion`) accepts (P1).

No pad can hold up the unit (P8): everything runs on the daemon's event loop without blocking it.
A line must end within `pad.line_timeout_s` of its first byte, and a pad must take the unit's
answers within `pad.write_timeout_s`. On the socket, a connection that sends no line for
`pad.idle_timeout_s` is closed, and a new connection when `MAX_CLIENTS` are open closes the one
that sent a line longest ago: a pad reconnects, and gets the current challenge when it does. A
serial pad that is absent, fails or stops reading is a pad fault on the status light until it
opens again; the unit keeps trying.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import grp
import json
import logging
import os
import termios
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING
from collections.abc import Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

from appliance.config import PadConfig
from formats import assertion
from appliance.unit import Unit

if TYPE_CHECKING:  # pyserial is imported when a serial pad is configured (appliance/serial_port.py)
    import serial

log = logging.getLogger(__name__)

MAX_LINE = 8192
MAX_CLIENTS = 8
# Answers waiting for a pad beyond this many bytes: the pad is not reading.
MAX_BACKLOG = 4 * MAX_LINE
# A serial pad that is absent or failed is tried again after at most this long.
REOPEN_MAX_S = 2.0
OPEN_TIMEOUT_S = 5.0
_MESSAGES = {"arm": {"type"}, "stop": {"type"}, "mark": {"type"}, "pause": {"type"},
             "preview": {"type"}, "token": {"type", "token"}, "assertion": {"type", "assertion"}}

Send = Callable[[dict], None]


class MalformedMessage(Exception):
    """A line on the pad link that is not one of the messages it carries."""


def parse_message(line: bytes) -> dict:
    """Parse one line from a pad, or raise `MalformedMessage`."""
    if len(line) > MAX_LINE:
        raise MalformedMessage("line too long")
    try:
        msg = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedMessage("not JSON") from None
    if not isinstance(msg, dict) or msg.get("type") not in _MESSAGES:
        raise MalformedMessage("unknown message")
    if set(msg) != _MESSAGES[msg["type"]]:
        raise MalformedMessage(f"{msg['type']} takes exactly {sorted(_MESSAGES[msg['type']])}")
    if msg["type"] == "token" and not isinstance(msg["token"], str):
        raise MalformedMessage("token must be a string")
    if msg["type"] == "assertion":
        try:
            assertion.parse_message(msg["assertion"])
        except ValueError as e:
            raise MalformedMessage(str(e)) from None
    return msg


def encode(msg: dict) -> bytes:
    """One line of the link."""
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


class PadLink:
    """Dispatches pad messages to the unit and sends challenges to every connected pad."""

    def __init__(self, unit: Unit):
        self._unit = unit
        self._pads: set[Send] = set()
        unit.on_challenge(self._broadcast_challenge)

    def connect(self, send: Send) -> Callable[[], None]:
        """Register a pad; returns the function that unregisters it."""
        self._pads.add(send)
        challenge = self._unit.challenge
        if challenge is not None:
            send(self._challenge(challenge, self._unit.config.recording.arm_timeout_s))
        return lambda: self._pads.discard(send)

    async def handle(self, line: bytes, send: Send) -> None:
        """Act on one line from a pad and answer it."""
        try:
            msg = parse_message(line)
        except MalformedMessage as e:
            log.warning("pad link: refused a message: %s", e)
            send({"type": "result", "ok": False, "reason": f"malformed message: {e}"})
            return
        if msg["type"] == "arm":
            await self._unit.press(source="pad")
            if self._unit.challenge is None:  # the press disarmed or stopped
                send({"type": "result", "ok": True, "reason": self._unit.state.value})
        elif msg["type"] == "stop":
            await self._unit.stop("stop from pad")
            send({"type": "result", "ok": True, "reason": "stopped"})
        elif msg["type"] == "assertion":
            result = await self._unit.present_assertion(msg["assertion"])
            send({"type": "result", "ok": result.ok, "reason": result.reason})
        elif msg["type"] == "mark":
            marked = self._unit.mark()
            send({"type": "result", "ok": marked.ok, "reason": marked.reason})
        elif msg["type"] == "preview":
            def deliver(png: bytes | None, reason: str) -> None:
                send({"type": "preview", "ok": png is not None, "reason": reason,
                      "png": base64.b64encode(png or b"").decode()})
            armed = self._unit.preview(deliver)
            send({"type": "result", "ok": armed.ok, "reason": armed.reason})
        elif msg["type"] == "pause":
            paused = self._unit.pause()
            send({"type": "result", "ok": paused.ok, "reason": paused.reason})
        else:
            result = await self._unit.present(msg["token"])
            send({"type": "result", "ok": result.ok, "reason": result.reason})

    def pad_failed(self, reason: str) -> None:
        """The pad's device failed: a fault on the status light and one journal line."""
        self._unit.report_fault("pad", reason)

    def pad_works(self) -> None:
        """The pad's device works (again)."""
        self._unit.clear_fault("pad")

    def _broadcast_challenge(self, nonce: str, expires_in: float) -> None:
        for send in list(self._pads):
            send(self._challenge(nonce, expires_in))

    def _challenge(self, nonce: str, expires_in: float) -> dict:
        return {"type": "challenge", "device": self._unit.config.device.id, "nonce": nonce,
                "expires_in": int(expires_in)}


async def serve_socket(link: PadLink, pad: PadConfig) -> asyncio.AbstractServer:
    """Listen on `pad.socket`, mode 0660, owned by `pad.socket_group` if that group exists.

    At most `MAX_CLIENTS` connections are kept: a new one is always served, and closes the open
    connection that sent a line longest ago."""
    pad.socket.parent.mkdir(parents=True, exist_ok=True)
    if pad.socket.is_socket():
        pad.socket.unlink()
    open_: set[_Connection] = set()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while len(open_) >= MAX_CLIENTS:
            stalest = min(open_, key=lambda c: c.last_line)
            open_.discard(stalest)
            log.warning("pad link: %d connections open; closed the one idle longest",
                        MAX_CLIENTS)
            stalest.drop(Ended("closed for a new connection", quiet=True))
        connection = _Connection(link, reader, writer, pad, idle_timeout_s=pad.idle_timeout_s)
        open_.add(connection)
        try:
            ended = await connection.serve()
            if not ended.quiet:
                log.warning("pad link: closed a connection: %s", ended.reason)
        except asyncio.CancelledError:
            pass  # the daemon is shutting down; the pad will reconnect
        finally:
            open_.discard(connection)
            await connection.close()

    server = await asyncio.start_unix_server(client, path=str(pad.socket), limit=MAX_LINE + 2)
    os.chmod(pad.socket, 0o660)
    if pad.socket_group:
        try:
            os.chown(pad.socket, -1, grp.getgrnam(pad.socket_group).gr_gid)
        except KeyError:
            log.warning("pad link: group %s does not exist; socket left in the daemon's group",
                        pad.socket_group)
    return server


class SerialPad:
    """The same link over a serial device (a USB PIN pad), without blocking the event loop.

        pad = SerialPad(link, config.pad)
        task = asyncio.create_task(pad.run())    # until cancelled

    While the device is absent, cannot be read, or does not take the unit's answers, the pad
    is a fault (one journal line, the status light); the device is opened again, at most
    `REOPEN_MAX_S` later, and the fault clears when it opens."""

    def __init__(self, link: PadLink, pad: PadConfig):
        assert pad.serial is not None
        self._link = link
        self._pad = pad
        self._failing = False

    async def run(self) -> None:
        """Serve the pad until cancelled; every end of the link is followed by a new try."""
        retrying = AsyncRetrying(retry=retry_if_exception_type(_PadLost),
                                 wait=wait_exponential(multiplier=0.1, max=REOPEN_MAX_S),
                                 before_sleep=self._lost)
        await retrying(self._open_and_serve)

    async def _open_and_serve(self) -> None:
        try:
            async with asyncio.timeout(OPEN_TIMEOUT_S):
                reader, writer = await self._open()
        except (OSError, ValueError, TimeoutError) as e:  # pyserial's errors are OSErrors
            raise _PadLost(Ended(f"cannot open {self._pad.serial}: {_reason(e)}",
                                 pad_fault=True)) from None
        if self._failing:
            self._failing = False
            self._link.pad_works()
        connection = _Connection(self._link, reader, writer, self._pad, idle_timeout_s=None)
        try:
            raise _PadLost(await connection.serve())
        finally:
            await connection.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # serial_asyncio_fast.open_serial_connection, with a port whose writes never spin.
        import serial_asyncio_fast

        from appliance.serial_port import NonBlockingSerial
        loop = asyncio.get_running_loop()
        port = await loop.run_in_executor(None, functools.partial(
            NonBlockingSerial, str(self._pad.serial), self._pad.serial_baud))
        reader = asyncio.StreamReader(limit=MAX_LINE + 2)
        protocol = asyncio.StreamReaderProtocol(reader)
        transport, _ = await serial_asyncio_fast.connection_for_serial(
            loop, lambda: protocol, port)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    def _lost(self, state: RetryCallState) -> None:
        assert state.outcome is not None  # tenacity calls before_sleep after an attempt
        lost = state.outcome.exception()
        assert isinstance(lost, _PadLost)  # only _PadLost is retried
        ended = lost.ended
        if not ended.pad_fault:
            log.warning("pad link (serial): %s; opening the device again", ended.reason)
        elif not self._failing:  # one line per outage, not one per try
            self._failing = True
            self._link.pad_failed(f"serial pad: {ended.reason}")


@dataclass(frozen=True)
class Ended:
    """Why a pad's connection ended. `pad_fault`: the pad's device failed, rather than the pad
    broke the link's rules; `quiet`: nothing for the journal when a socket connection ends so."""

    reason: str
    pad_fault: bool = False
    quiet: bool = False


class _PadLost(Exception):
    def __init__(self, ended: Ended):
        super().__init__(ended.reason)
        self.ended = ended


class _LineTooLong(Exception):
    pass


class _Connection:
    """One pad on one stream: a Unix socket connection or the serial device."""

    def __init__(self, link: PadLink, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter, pad: PadConfig, idle_timeout_s: float | None):
        self.last_line = time.monotonic()
        self._link = link
        self._reader = reader
        self._writer = writer
        self._pad = pad
        self._idle_timeout_s = idle_timeout_s
        self._dropped: Ended | None = None
        self._aborted = False
        self._port: serial.Serial | None = writer.transport.get_extra_info("serial")
        writer.transport.set_write_buffer_limits(high=MAX_BACKLOG)

    async def serve(self) -> Ended:
        """Read and answer lines until the pad goes, breaks the link's rules, or is dropped."""
        disconnect = self._link.connect(self.send)
        try:
            return await self._serve()
        finally:
            disconnect()

    def send(self, msg: dict) -> None:
        """Queue one message for the pad; never waits. A pad with too much unread is dropped."""
        if self._writer.transport.is_closing():
            return
        if self._writer.transport.get_write_buffer_size() > MAX_BACKLOG:
            self.drop(Ended("the pad is not reading what the unit sends", pad_fault=True))
            return
        self._writer.write(encode(msg))

    def drop(self, why: Ended) -> None:
        """End the connection now, discarding what the pad has not read."""
        if self._dropped is None:
            self._dropped = why
        transport = self._writer.transport
        if self._port is None:
            transport.abort()
            return
        try:
            self._port.reset_output_buffer()  # else closing the port waits for the pad to read
        except (OSError, termios.error):  # pyserial's errors are OSErrors
            pass
        # A serial transport ends once per abort: abort it once, and not at all if it is
        # closing already, unless it still waits to write to the pad, which may never read.
        if not self._aborted and (not transport.is_closing()
                                  or transport.get_write_buffer_size() > 0):
            self._aborted = True
            transport.abort()

    async def close(self) -> None:
        """Close gently if the pad takes what is queued within the write timeout, else drop."""
        if self._port is not None:
            self.drop(Ended("closed", quiet=True))  # closing a serial port waits for it to drain
            return
        self._writer.close()
        try:
            async with asyncio.timeout(self._pad.write_timeout_s):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            self._writer.transport.abort()

    async def _serve(self) -> Ended:
        while True:
            try:
                line = await self._read_line()
            except _LineTooLong:
                log.warning("pad link: refused a message: line too long")
                self.send({"type": "result", "ok": False,
                           "reason": "malformed message: line too long"})
                continue
            except _PadLost as e:  # a timeout
                return self._dropped or e.ended
            except asyncio.IncompleteReadError:
                return self._dropped or Ended("the pad closed the link", pad_fault=True,
                                              quiet=True)
            except (ConnectionError, OSError) as e:
                return self._dropped or Ended(f"cannot read: {_reason(e)}", pad_fault=True,
                                              quiet=True)
            self.last_line = time.monotonic()
            await self._link.handle(line, self.send)
            try:
                async with asyncio.timeout(self._pad.write_timeout_s):
                    await self._writer.drain()
            except TimeoutError:
                self.drop(Ended("the pad is not reading what the unit sends", pad_fault=True))
            except (ConnectionError, OSError) as e:
                return self._dropped or Ended(f"cannot write: {_reason(e)}", pad_fault=True,
                                              quiet=True)
            if self._dropped is not None:
                return self._dropped

    async def _read_line(self) -> bytes:
        """The next line, its newline included. Raises `_PadLost` when no line starts within the
        idle timeout or a line does not end within the line timeout."""
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                first = await self._reader.readexactly(1)
        except TimeoutError:
            raise _PadLost(Ended(f"no line for {self._idle_timeout_s:g} s", quiet=True)) from None
        if first == b"\n":
            return first
        try:
            async with asyncio.timeout(self._pad.line_timeout_s):
                try:
                    return first + await self._reader.readuntil(b"\n")
                except asyncio.LimitOverrunError as e:
                    await self._skip_line(e.consumed)
                    raise _LineTooLong() from None
        except TimeoutError:
            raise _PadLost(Ended(
                f"a line not finished within {self._pad.line_timeout_s:g} s")) from None

    async def _skip_line(self, consumed: int) -> None:
        while True:
            await self._reader.readexactly(consumed)
            try:
                await self._reader.readuntil(b"\n")
                return
            except asyncio.LimitOverrunError as e:
                consumed = e.consumed


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.errno:  # pyserial repeats the path and the errno
        return os.strerror(error.errno)
    return str(error) or type(error).__name__
