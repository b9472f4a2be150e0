"""A scripted lesson in the simulator, told as it happens: the whole path from the record button
to the lesson video on the teacher's own computer, then the timeline and the P1-P3 checks.

    python -m hwsim.demo [--out demo-out] [--seconds 60] [--realtime]

What runs is the real daemon (`classcam run --hw sim`) with simulated button, LEDs, speaker,
camera, microphone and USB keypad (read by the real pad service, pinpad), uploading over real
mutual TLS to the reference account server on loopback. The teacher's keys are made as
`classcam keys new` makes them on the teacher's own computer, enrolled as IT would with
`classcam roster add`, and at the end the teacher downloads with `classcam account get` and
joins the lesson with `classcam decrypt`.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from hwsim.invariants import check_all
from hwsim.lab import PASSPHRASE, Lab, RunningUnit

TEACHER, PIN = "t-evans", "432187"
# A second teacher, whose key is on their own FIDO2 security key (simulated), with its PIN.
FIDO_TEACHER, FIDO_PIN = "t-ahmed", "246810"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwsim.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-out"))
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the lesson records")
    parser.add_argument("--realtime", action="store_true",
                        help="speak the notices in real time (default: 10x faster)")
    args = parser.parse_args(argv)

    shutil.rmtree(args.out, ignore_errors=True)
    say("Setting up: the teachers make their keys (one on a security key); IT enrols their cards "
        "on the unit and the pad; the pad seals the first teacher's key under their PIN")
    lab = Lab.create(args.out.resolve(), teachers={TEACHER: PIN, FIDO_TEACHER: FIDO_PIN},
                     security_keys={FIDO_TEACHER},
                     sim={"speed": 1.0 if args.realtime else 10.0},
                     notice={"languages": ["en", "cy"]},
                     capture={"width": 1280, "height": 720, "fps": 25, "segment_seconds": 10,
                              "x264_preset": "veryfast", "min_free_mb": 200})
    with lab.account(retry_max_s=5.0) as server, lab.daemon() as unit:
        say(f"The teacher's account server is up at {server.url} (mutual TLS, test CA)")
        say("The teacher presses the record button")
        unit.control("press")
        unit.wait_state("armed")
        say("The unit is armed (amber blinking) and sends a challenge to the PIN pad")
        say("The teacher types their number and PIN on the USB keypad: the real pad service "
            "(classcam-pinpad) unseals their key (Argon2id) and signs a start token")
        result = unit.control("pin", teacher=TEACHER, pin=PIN)["result"]
        say(f"The unit answers the pad: {result}")
        if not result["ok"]:
            return 1
        say("Red LED on; the notice is spoken to the room (English, then Welsh)")
        unit.wait_state("recording", timeout=120)
        say(f"Camera and microphone open; recording for {args.seconds:g} s")
        time.sleep(args.seconds)
        during = sum(len(files) for files in server.stored(TEACHER).values())
        say(f"{during} sealed segment(s) already reached the teacher's account during the lesson")
        say("The teacher presses the button again to stop")
        unit.control("press")
        unit.wait_state("idle", timeout=60)
        say("Devices closed, LED off, the room told that recording has stopped")
        if not security_key_lesson(unit, min(args.seconds, 3.0)):
            return 1
        unit.wait_uploaded(timeout=300)
        say("The last segment and the signed manifest are uploaded; the unit's spool is empty")
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
    print("\nOn the teacher's computer: download the recording, check it and join it")
    with lab.account():  # the server again, holding what the unit uploaded
        lesson = teacher_downloads_and_decrypts(lab)
    print(f"\nFiles in {lab.root}:")
    if lesson is not None:
        print(f"  {lesson.relative_to(lab.root)}                  the lesson, as the teacher sees it")
    print("  teacher-computers/downloads/  the ciphertext the teacher downloaded (age, and the manifest)")
    print(f"  account/{TEACHER}/              the account server's copy: ciphertext only")
    print("  var/spool/                    the unit's spool: empty once the server confirmed each file")
    print("  timeline.jsonl, daemon.log    the simulator's record and the daemon's journal")
    print("  teacher-computers/            the teacher's keys (passphrase-protected) and card")
    return 1 if problems or lesson is None or lab.spooled() else 0


def security_key_lesson(unit: RunningUnit, seconds: float) -> bool:
    """A short lesson by the teacher whose key is on their security key."""
    say(f"Another teacher ({FIDO_TEACHER}) plugs in their FIDO2 security key and presses record")
    unit.control("press")
    unit.wait_state("armed")
    say("They type their number and PIN: the pad gives the PIN to the security key, which checks "
        "it and signs the unit's challenge; the pad holds no key of theirs")
    result = unit.control("pin", teacher=FIDO_TEACHER, pin=FIDO_PIN)["result"]
    say(f"The unit answers the pad: {result}")
    if not result["ok"]:
        return False
    unit.wait_state("recording", timeout=120)
    time.sleep(seconds)
    unit.control("press")
    unit.wait_state("idle", timeout=60)
    say(f"{seconds:g} s recorded, encrypted to {FIDO_TEACHER}, and stopped")
    return True


def teacher_downloads_and_decrypts(lab: Lab) -> Path | None:
    """As the teacher would: list the account, download, check the unit's key, decrypt."""
    cred = lab.teacher_credential(TEACHER)
    account = ["--url", lab.settings["upload"]["url"], "--teacher-id", TEACHER,
               "--cert", str(cred.cert), "--key", str(cred.key), "--ca", str(lab.pki().ca_cert)]
    listing = classcam(lab, "account", "ls", *account)
    if listing is None:
        return None
    recording_id = listing.split()[0]
    downloads = lab.keys_dir / "downloads" / recording_id
    if classcam(lab, "account", "get", recording_id, "-o", str(downloads), *account) is None:
        return None
    # The fingerprint the teacher reads off the unit (IT runs this on it) pins the manifest's key.
    device = classcam(lab, "keys", "device", "--config", str(lab.config_path))
    if device is None:
        return None
    lesson = lab.root / "lesson.mp4"
    decrypted = classcam(lab, "decrypt", "--identity", str(lab.key_files(TEACHER).identity),
                         "--device-fingerprint", device.split()[-1],
                         "--known-devices", str(lab.keys_dir / "known_devices.json"),
                         str(downloads), "-o", str(lesson))
    return lesson if decrypted is not None else None


def classcam(lab: Lab, *args: str) -> str | None:
    """Run a `classcam` command as shown to a person; its output, or None if it failed."""
    shown = [a if not a.startswith(str(lab.root)) else os.path.relpath(a) for a in args]
    print(f"  $ classcam {' '.join(shown)}")
    run = subprocess.run([sys.executable, "-m", "appliance.cli", *args],
                         env=dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE),
                         capture_output=True, text=True)
    for line in (run.stdout + run.stderr).splitlines():
        print(f"    {line}")
    return run.stdout if run.returncode == 0 else None


def say(text: str) -> None:
    print(f"* {text}", flush=True)


def print_timeline(events: list[dict]) -> None:
    """Print events relative to the first; a run of camera frames is one line."""
    if not events:
        return
    t0 = events[0]["t"]
    frames: list[dict] = []

    def flush_frames() -> None:
        if frames:
            print(f"  {frames[0]['t'] - t0:9.3f}  {'frames':<15} n={frames[0]['n']}..{frames[-1]['n']}"
                  f" ({len(frames)} frames until {frames[-1]['t'] - t0:.3f})")
            frames.clear()

    for e in events:
        if e["ev"] == "pin" and e["name"].startswith("status_"):
            continue
        if e["ev"] == "frame":
            frames.append(e)
            continue
        flush_frames()
        detail = " ".join(f"{k}={v}" for k, v in e.items() if k not in ("t", "ev"))
        print(f"  {e['t'] - t0:9.3f}  {e['ev']:<15} {detail}")
    flush_frames()


if __name__ == "__main__":
    sys.exit(main())
