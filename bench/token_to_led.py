"""How fast the recording LED follows a start token and a stop press, in the simulator.

    python bench/token_to_led.py [--runs 200] [--quick]

One simulated classroom (`hwsim.lab.Lab`) and one running daemon (`classcam run --hw sim`). Each
run arms the unit, takes the challenge from the pad link, mints a valid token (before timing),
then measures

    token -> LED on    from just before the token line is written to the pad socket, to the
                       timeline's `recording_led` 1.0 event;
    stop  -> LED off   from just before the simulator's "press" that stops the recording, to the
                       timeline's `recording_led` 0.0 event (this includes stopping the encoders
                       and sealing the last segment, which the daemon does before the LED goes
                       off, as P2 requires).

Timeline times are CLOCK_MONOTONIC, system-wide, so they compare with this process's
`time.monotonic()`. The peer, measured in the same run and interleaved with it, is the round trip
of one bare JSON line over a Unix socket to a trivial asyncio echo server in another Python
process: the least that any "line in on a socket, act, report" path on this machine can cost.
"""
from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwsim.lab import Lab  # noqa: E402
from tests.padclient import PadClient, teacher_token  # noqa: E402
from procstat import loadavg  # noqa: E402

OUT = ROOT / "bench" / "out"
TEACHER = "t-evans"

ECHO_SERVER = r"""
import asyncio, os, sys

async def main(path):
    async def client(reader, writer):
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()
        writer.close()
    server = await asyncio.start_unix_server(client, path=path)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main(sys.argv[1]))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 runs, for a smoke test")
    parser.add_argument("--hold", type=float, default=0.1,
                        help="seconds to record in each run before the stop press")
    args = parser.parse_args(argv)
    runs = 20 if args.quick else args.runs

    work = OUT / "token_to_led"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    load_before = loadavg()
    print(f"making keys and starting the daemon ({runs} runs) ...", flush=True)
    lab = Lab.create(work / "lab", teachers={TEACHER: "432187"},
                     capture={"width": 160, "height": 120, "x264_preset": "ultrafast",
                              "segment_seconds": 1},
                     sim={"speed": 1000.0})
    echo = _EchoPeer(work / "echo.sock")
    on_ms, off_ms, peer_ms = [], [], []
    stages: dict[str, list[float]] = {}
    try:
        with lab.daemon() as unit:
            pad = PadClient(lab.pad_socket)
            timeline = TimelineFollower(lab.timeline_path)
            for i in range(runs):
                on, off, parts = _one_run(unit, pad, lab, timeline, args.hold)
                for name, seconds in parts.items():
                    stages.setdefault(name, []).append(seconds * 1e3)
                on_ms.append(on * 1e3)
                off_ms.append(off * 1e3)
                peer_ms.append(echo.round_trip() * 1e3)
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1}/{runs}", flush=True)
            pad.close()
    finally:
        echo.close()
    load_after = loadavg()

    rows = [("token -> LED on", on_ms), ("stop press -> LED off", off_ms),
            ("peer: JSON line echo over Unix socket", peer_ms)]
    print()
    print(f"{'measure (' + str(runs) + ' runs)':40} {'median ms':>10} {'p99 ms':>10}")
    for name, values in rows:
        print(f"{name:40} {statistics.median(values):10.3f} {_p99(values):10.3f}")
    peer_median, peer_p99 = statistics.median(peer_ms), _p99(peer_ms)
    print()
    print(f"RATIO token->LED on / peer:   median {statistics.median(on_ms) / peer_median:7.1f}x"
          f"   p99 {_p99(on_ms) / peer_p99:7.1f}x")
    print(f"RATIO stop->LED off / peer:   median {statistics.median(off_ms) / peer_median:7.1f}x"
          f"   p99 {_p99(off_ms) / peer_p99:7.1f}x")
    print()
    print(f"{'where the time goes (timeline events)':64} {'median ms':>10}")
    for name, values in stages.items():
        print(f"  {name:62} {statistics.median(values):10.3f}")
    tenth = max(1, runs // 10)
    print(f"token -> LED on, first {tenth} runs median {statistics.median(on_ms[:tenth]):.3f} ms,"
          f" last {tenth} runs median {statistics.median(on_ms[-tenth:]):.3f} ms (each run leaves"
          f" one more recording in the spool)")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


def _one_run(unit, pad: PadClient, lab: Lab, timeline: TimelineFollower,
             hold: float) -> tuple[float, float, dict[str, float]]:
    """One arm/start/stop cycle: (token -> LED on, stop -> LED off, stages in seconds)."""
    unit.control("press")
    nonce = pad.receive("challenge")["nonce"]
    line = json.dumps({"type": "token",
                       "token": teacher_token(lab, TEACHER, nonce)}).encode() + b"\n"
    t0 = time.monotonic()
    pad.send_line(line)
    led_on, starting = timeline.wait_for(lambda e: _led(e, 1.0), after=t0)
    result = pad.receive("result")
    if not result["ok"]:
        raise RuntimeError(f"token refused: {result}")
    unit.wait_state("recording")
    time.sleep(hold)
    t2 = time.monotonic()
    unit.control("press")
    led_off, stopping = timeline.wait_for(lambda e: _led(e, 0.0), after=t2)
    unit.wait_state("idle")
    t1, t3 = led_on["t"], led_off["t"]
    accepted = _first(starting, lambda e: e["ev"] == "token" and e.get("ok"))
    requested = _first(stopping, lambda e: e["ev"] == "stop_requested")
    closed = _first(stopping, lambda e: e["ev"] == "device" and e.get("phase") == "close")
    stages = {
        "token line -> token accepted (read, parse, verify)": accepted - t0,
        "token accepted -> LED on (task, thread, pin)": t1 - accepted,
        "stop press -> stop_requested (control socket, button, loop)": requested - t2,
        # The capture thread finishes the frame in hand first: its blocking audio read lasts
        # until the end of the frame's period, so up to 1/fps, then flush, seal, fsync.
        "stop_requested -> first device closed (in-flight read, seal)": closed - requested,
        "first device closed -> LED off": t3 - closed,
    }
    return t1 - t0, t3 - t2, stages


def _first(events: list[dict], match) -> float:
    return next(e["t"] for e in events if match(e))


def _led(event: dict, value: float) -> bool:
    return (event.get("ev") == "pin" and event.get("name") == "recording_led"
            and event.get("value") == value)


class TimelineFollower:
    """Reads a timeline file as it grows, from where it last stopped."""

    def __init__(self, path: Path):
        self._path = path
        self._file = None
        self._partial = b""

    def wait_for(self, match, after: float, timeout: float = 30.0) -> tuple[dict, list[dict]]:
        """The first new event with `t >= after` that `match`es, and the events from `after`
        up to it (for a breakdown of where the time went)."""
        deadline = time.monotonic() + timeout
        seen: list[dict] = []
        while time.monotonic() < deadline:
            for event in self._new_events():
                if event["t"] >= after:
                    seen.append(event)
                    if match(event):
                        return event, seen
            time.sleep(0.0005)
        raise TimeoutError("no matching timeline event")

    def _new_events(self) -> list[dict]:
        if self._file is None:
            if not self._path.exists():
                return []
            self._file = open(self._path, "rb")
        data = self._partial + self._file.read()
        lines = data.split(b"\n")
        self._partial = lines.pop()  # a line still being written
        return [json.loads(line) for line in lines if line.strip()]


class _EchoPeer:
    """A trivial asyncio echo server in another process, and a blocking client of it."""

    def __init__(self, path: Path):
        self._proc = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(path)],
                                      stdout=subprocess.PIPE)
        assert self._proc.stdout.readline().strip() == b"ready"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect(str(path))
        self._file = self._sock.makefile("rwb")
        self._line = json.dumps({"type": "result", "ok": True, "reason": "recording"}).encode() + b"\n"

    def round_trip(self) -> float:
        t0 = time.monotonic()
        self._file.write(self._line)
        self._file.flush()
        reply = self._file.readline()
        elapsed = time.monotonic() - t0
        assert reply == self._line
        return elapsed

    def close(self) -> None:
        self._file.close()
        self._sock.close()
        self._proc.terminate()
        self._proc.wait()


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


if __name__ == "__main__":
    sys.exit(main())
