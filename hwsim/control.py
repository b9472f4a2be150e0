"""The simulator's control socket: press the button, type on the pad, switch faults, ask the
state, while the real daemon runs (`classcam run --hw sim`). Newline-delimited JSON:

    {"cmd": "press"}                                   the record button
    {"cmd": "hold", "seconds": 2.0}                    the record button held down
    {"cmd": "pad_arm"}                                 the keypad's record key (+)
    {"cmd": "pad_mark"} / {"cmd": "pad_pause"}         its bookmark (*) and pause (Num Lock) keys
    {"cmd": "pin", "teacher": ID, "pin": "432187", "act": "start"}   types the teacher's number
                                and PIN on the simulated keypad (plugging in their security key,
                                if they have one); answers the unit's result or the pad's refusal
    {"cmd": "fault", "name": "speaker", "on": true}
    {"cmd": "status"}            {"state", "fault", "open": [...], "recording_led", "light"}
    {"cmd": "block_loop", "seconds": 1.0}   blocks the daemon's event loop (watchdog tests)

This socket exists only in the simulator; a real unit has no such thing (P1).

    python -m hwsim.control --socket PATH press
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any


if TYPE_CHECKING:
    from appliance.unit import Unit
    from hwsim.factory import SimParts


async def serve(path: Path, unit: Unit, parts: SimParts) -> None:
    """Run the control socket until cancelled."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    reply = await _command(json.loads(line), unit, parts)
                except Exception as e:  # a bad command is answered, never fatal
                    reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                writer.write(json.dumps(reply).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass  # the client went away, or the daemon is shutting down
        finally:
            writer.close()

    server = await asyncio.start_unix_server(client, path=str(path))
    async with server:
        await server.serve_forever()


async def _command(cmd: dict, unit: Unit, parts: SimParts) -> dict[str, Any]:
    name = cmd.get("cmd")
    if name == "press":
        pin = parts.button_pin
        await asyncio.to_thread(pin.drive_low)
        await asyncio.sleep(0.01)
        await asyncio.to_thread(pin.drive_high)
        return {"ok": True}
    if name == "hold":  # the record button held down for `seconds`
        pin = parts.button_pin
        await asyncio.to_thread(pin.drive_low)
        await asyncio.sleep(float(cmd.get("seconds", 2.0)))
        await asyncio.to_thread(pin.drive_high)
        return {"ok": True}
    if name == "pad_arm":
        await parts.pad.press_record()
        return {"ok": True}
    if name in ("pad_mark", "pad_pause"):  # the keypad's bookmark (*) and pause keys
        await (parts.pad.press_mark() if name == "pad_mark" else parts.pad.press_pause())
        return {"ok": True}
    if name == "pin":
        result = await parts.pad.enter(cmd["teacher"], str(cmd["pin"]), cmd.get("act", "start"))
        return {"ok": True, "result": result}
    if name == "fault":
        parts.faults.set(cmd["name"], bool(cmd.get("on", True)))
        return {"ok": True, "faults": parts.faults.active()}
    if name == "block_loop":  # a wedged event loop, for the watchdog's test
        time.sleep(float(cmd.get("seconds", 1.0)))
        return {"ok": True}
    if name == "status":
        return {"ok": True, "state": unit.state.value, "fault": unit.fault,
                "open": [d for d, device in parts.devices.items() if device.is_open],
                "recording_led": bool(parts.recording_led_pin.state),
                "light": parts.status_led.pattern.name.lower() if parts.status_led.pattern else None}
    return {"ok": False, "error": f"unknown command {name!r}"}


class ControlClient:
    """Blocking client for tests and people."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")

    def __call__(self, cmd: str, **args: Any) -> dict:
        self._file.write(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        self._file.flush()
        return json.loads(self._file.readline())

    def close(self) -> None:
        self._file.close()
        self._sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwsim.control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("command",
                        help="press | pad_arm | pin TEACHER PIN [ACT] | fault NAME on|off | status")
    parser.add_argument("args", nargs="*")
    a = parser.parse_args(argv)
    client = ControlClient(a.socket)
    if a.command == "pin":
        reply = client("pin", teacher=a.args[0], pin=a.args[1],
                       act=a.args[2] if len(a.args) > 2 else "start")
    elif a.command == "fault":
        reply = client("fault", name=a.args[0], on=a.args[1] == "on")
    else:
        reply = client(a.command)
    print(json.dumps(reply))
    return 0 if reply.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
