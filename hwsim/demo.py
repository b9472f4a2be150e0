"""A scripted lesson in the simulator, told as it happens, then the timeline and the P1-P3 checks.

    python -m hwsim.demo [--out demo-out] [--seconds 5] [--realtime]

What runs is the real daemon (`classcam run --hw sim`) with simulated button, LEDs, speaker,
camera, microphone and PIN pad. The teacher's keys are made as `classcam keys new` makes them on
the teacher's own computer, and enrolled as IT would with `classcam roster add`.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from hwsim.invariants import check_all
from hwsim.lab import Lab

TEACHER, PIN = "t-evans", "4321"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwsim.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--seconds", type=float, default=5.0, help="how long the lesson records")
    parser.add_argument("--realtime", action="store_true",
                        help="speak the notices in real time (default: 10x faster)")
    args = parser.parse_args(argv)

    shutil.rmtree(args.out, ignore_errors=True)
    say("Setting up: the teacher makes their keys; IT enrols their card; the pad learns the PIN")
    lab = Lab.create(args.out.resolve(), teachers={TEACHER: PIN},
                     sim={"speed": 1.0 if args.realtime else 10.0},
                     notice={"languages": ["en", "cy"]})
    with lab.daemon() as unit:
        say("The teacher presses the record button")
        unit.control("press")
        unit.wait_state("armed")
        say("The unit is armed (amber blinking) and sends a challenge to the PIN pad")
        say("The teacher types their PIN on the pad: it mints a signed start token")
        result = unit.control("pin", teacher=TEACHER, pin=PIN)["result"]
        say(f"The unit answers the pad: {result}")
        if not result["ok"]:
            return 1
        say("Red LED on; the notice is spoken to the room (English, then Welsh)")
        unit.wait_state("recording", timeout=120)
        say(f"Camera and microphone open; recording for {args.seconds:g} s")
        time.sleep(args.seconds)
        say("The teacher presses the button again to stop")
        unit.control("press")
        unit.wait_state("idle", timeout=60)
        say("Devices closed, LED off, the room told that recording has stopped")
    events = lab.timeline()
    print("\nTimeline (seconds from the first event; status-LED blinks left out):")
    print_timeline(events)
    problems = check_all(events)
    print("\nInvariants read off the timeline:")
    for name, text in (("P1", "capture opened only after a verified token for the current challenge"),
                       ("P2", "recording LED lit for every instant a device was open"),
                       ("P3", "notice finished before the first device opened")):
        bad = [p for p in problems if p.startswith(name)]
        print(f"  {name} {'held' if not bad else 'BROKEN'}: {text}")
        for p in bad:
            print(f"     {p}")
    print(f"\nFiles: {lab.root} (timeline.jsonl, daemon.log, the teacher's keys, the roster)")
    return 1 if problems else 0


def say(text: str) -> None:
    print(f"* {text}", flush=True)


def print_timeline(events: list[dict]) -> None:
    if not events:
        return
    t0 = events[0]["t"]
    for e in events:
        if e["ev"] == "pin" and e["name"].startswith("status_"):
            continue
        detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "ev"))
        print(f"  {e['t'] - t0:9.3f}  {e['ev']:<15} {detail}")


if __name__ == "__main__":
    sys.exit(main())
