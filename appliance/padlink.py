"""The local PIN pad link (DESIGN.md section 4): newline-delimited JSON over a Unix socket or a
serial device.

    pad -> unit  {"type": "arm"}                  same as pressing the record button
                 {"type": "token", "token": JWT}  a start or discard token
                 {"type": "stop"}                 stop, no token needed (P8)
    unit -> pad  {"type": "challenge", "device": ID, "nonce": N, "expires_in": 60}
                 {"type": "result", "ok": bool, "reason": str}

Nothing else is understood: a line that is not one of these, or longer than `MAX_LINE` bytes, is
answered with `ok: false` and changes nothing. There is no message that starts capture without a
token that `Unit.present` accepts (P1).
"""
from __future__ import annotations

import asyncio
import grp
import json
import logging
import os
import threading
from pathlib import Path
from typing import Callable

from appliance.unit import Unit

log = logging.getLogger(__name__)

MAX_LINE = 8192
MAX_CLIENTS = 8
_MESSAGES = {"arm": {"type"}, "stop": {"type"}, "token": {"type", "token"}}

Send = Callable[[dict], None]


class MalformedMessage(Exception):
    """A line on the pad link that is not one of the three messages."""


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
        else:
            result = await self._unit.present(msg["token"])
            send({"type": "result", "ok": result.ok, "reason": result.reason})

    def _broadcast_challenge(self, nonce: str, expires_in: float) -> None:
        for send in list(self._pads):
            send(self._challenge(nonce, expires_in))

    def _challenge(self, nonce: str, expires_in: float) -> dict:
        return {"type": "challenge", "device": self._unit.config.device.id, "nonce": nonce,
                "expires_in": int(expires_in)}


async def serve_socket(link: PadLink, path: Path, group: str | None) -> asyncio.AbstractServer:
    """Listen on a Unix socket, mode 0660, owned by `group` if that group exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()
    clients = asyncio.Semaphore(MAX_CLIENTS)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if clients.locked():
            writer.close()
            return
        async with clients:
            try:
                await _serve_stream(link, reader, writer)
            except asyncio.CancelledError:
                pass  # the daemon is shutting down; the pad will reconnect

    server = await asyncio.start_unix_server(client, path=str(path), limit=MAX_LINE + 2)
    os.chmod(path, 0o660)
    if group:
        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except KeyError:
            log.warning("pad link: group %s does not exist; socket left in the daemon's group",
                        group)
    return server


async def _serve_stream(link: PadLink, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> None:
    def send(msg: dict) -> None:
        if not writer.is_closing():
            writer.write(encode(msg))

    disconnect = link.connect(send)
    try:
        while True:
            try:
                line = await reader.readuntil(b"\n")
            except asyncio.LimitOverrunError:
                send({"type": "result", "ok": False, "reason": "malformed message: line too long"})
                log.warning("pad link: refused a message: line too long; pad disconnected")
                return
            except asyncio.IncompleteReadError:
                return
            await link.handle(line, send)
            await writer.drain()
    except (ConnectionError, OSError):
        return
    finally:
        disconnect()
        writer.close()


class SerialPadLink:
    """The same link over a serial device (a USB PIN pad), read by a thread with pyserial."""

    def __init__(self, link: PadLink, device: Path, baud: int, loop: asyncio.AbstractEventLoop):
        import serial
        self._port = serial.Serial(str(device), baud, timeout=0.2)
        self._link = link
        self._loop = loop
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._read, name="pad-serial", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._port.close()

    def _send(self, msg: dict) -> None:
        try:
            self._port.write(encode(msg))
        except Exception as e:
            log.error("pad link (serial): cannot write: %s", e)

    def _read(self) -> None:
        disconnect = asyncio.run_coroutine_threadsafe(self._connect(), self._loop).result()
        buffer = b""
        try:
            while not self._closed.is_set():
                try:
                    chunk = self._port.read(512)
                except Exception as e:
                    log.error("pad link (serial): cannot read: %s", e)
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    asyncio.run_coroutine_threadsafe(
                        self._link.handle(line, self._send), self._loop).result()
                if len(buffer) > MAX_LINE:
                    buffer = b""  # drop the rest of an oversized line up to its newline
                    self._send({"type": "result", "ok": False,
                                "reason": "malformed message: line too long"})
                    buffer = self._skip_to_newline()
        finally:
            self._loop.call_soon_threadsafe(disconnect)

    async def _connect(self) -> Callable[[], None]:
        return self._link.connect(self._send)

    def _skip_to_newline(self) -> bytes:
        while not self._closed.is_set():
            chunk = self._port.read(512)
            if b"\n" in chunk:
                return chunk.split(b"\n", 1)[1]
        return b""
