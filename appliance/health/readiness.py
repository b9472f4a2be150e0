"""The first part of `classcam doctor`: what this unit still needs before its daemon may run,
one line each, for IT. It reads only files (no daemon, no network, no hardware), so the Debian
package's postinst can ask it (`classcam doctor --setup`) before anything runs.

    findings = diagnose(Path("/etc/classcam/classcam.toml"))
    ready = not any(f.missing for f in findings)

A *missing* finding is configuration without which the daemon must not run yet: the
configuration does not validate, the device id is still the example's, uploads are not set up,
or the daemon could not read its upload credentials. Everything else is a note. `classcam
doctor --setup` exits 1 when anything is missing; the Debian package enables classcam.service on
a first install only when it exits 0. `classcam doctor` goes on to the health checks
(appliance/health/doctor.py) only when nothing is missing.

It reports counts (teachers enrolled, files waiting in the spool), never who recorded or when
(P9).
"""
from __future__ import annotations

import grp
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from appliance.config import Config, ConfigError, load

# config/classcam.toml's device.id: a placeholder every unit is installed with, so not an id.
EXAMPLE_DEVICE_ID = "classcam-unit"
DAEMON_USER = "classcam"  # systemd/classcam.sysusers, and User= in classcam.service
UNIT = "classcam.service"


@dataclass(frozen=True)
class Finding:
    """One thing `classcam doctor` has to say."""

    missing: bool  # True: the unit is not ready to run until this is fixed
    text: str


def report(config_path: Path, out: TextIO | None = None) -> int:
    """Print every finding (to stdout by default); 0 when nothing is missing, else 1."""
    out = out or sys.stdout
    findings = diagnose(config_path)
    print(f"classcam doctor: {config_path}", file=out)
    for f in findings:
        print(f"{'missing' if f.missing else 'note'}: {f.text}", file=out)
    gaps = sum(f.missing for f in findings)
    print(f"{gaps} thing(s) missing" if gaps else "ready: nothing missing", file=out)
    return 1 if gaps else 0


def diagnose(config_path: Path) -> list[Finding]:
    """Everything worth telling IT about this unit, the missing things first."""
    try:
        config = load(config_path)
    except ConfigError as e:
        return [Finding(True, str(e))]
    findings = _configuration(config) + _notes(config)
    return sorted(findings, key=lambda f: not f.missing)


def _configuration(config: Config) -> list[Finding]:
    """What must be set before the daemon runs."""
    found = []
    if config.device.id == EXAMPLE_DEVICE_ID:
        found.append(Finding(True, f'device.id is still the example "{EXAMPLE_DEVICE_ID}": give '
                                   "this unit its own id (the device its teachers' tokens name)"))
    upload = config.upload
    if not upload.url:
        found.append(Finding(True, "upload.url is not set: recordings would never leave the unit "
                                   "(set url, client_cert and client_key in [upload])"))
    else:
        from appliance.daemon import upload_client
        try:
            client = upload_client(config)
            if client is not None:
                client.close()
        except ValueError as e:
            found.append(Finding(True, f"upload.url: {e}"))
    for name in ("client_cert", "client_key", "ca_bundle"):
        path = getattr(upload, name)
        if path is not None and upload.url and not _readable_by_daemon(path):
            found.append(Finding(True, f"upload.{name} {path} is not readable by user "
                                       f"{DAEMON_USER}: install -o root -g {DAEMON_USER} -m 0640"))
    key = upload.client_key
    if key is not None and key.exists() and key.stat().st_mode & 0o004:
        found.append(Finding(False, f"upload.client_key {key} is readable by every user: "
                                    "chmod 0640 it"))
    return found


def _notes(config: Config) -> list[Finding]:
    """What IT should know, and may want to act on, but that does not stop the daemon."""
    found = []
    found += _roster(config)
    found += _device_key(config)
    found += _spool(config)
    for module, package in (("picamera2", "python3-picamera2"), ("lgpio", "python3-lgpio")):
        if importlib.util.find_spec(module) is None:
            found.append(Finding(False, f"{module} is not installed: nothing can record until it "
                                        f"is (Raspberry Pi OS: apt install {package})"))
    if shutil.which("espeak-ng") is None:
        found.append(Finding(False, "espeak-ng is not installed: the spoken notice cannot play, so "
                                    "nothing can record (P3)"))
    found += _swap()
    found += _service()
    return found


def _roster(config: Config) -> list[Finding]:
    from appliance.roster import Roster
    try:
        cards = Roster(config.device.roster_dir).cards()
    except OSError as e:
        return [Finding(False, f"roster: {config.device.roster_dir}: {e.strerror}")]
    if not cards:
        return [Finding(False, "no teacher is enrolled: nobody can record until IT runs "
                               "`classcam roster add CARD`")]
    return [Finding(False, f"{len(cards)} teacher(s) enrolled")]


def _device_key(config: Config) -> list[Finding]:
    from appliance.device_key import FILE, DeviceKeyError, load as load_key
    from formats.keytext import fingerprint
    path = config.device.state_dir / FILE
    try:
        if not path.exists():
            return [Finding(False, "the device key is made when the daemon first starts")]
        key = load_key(config.device.state_dir)
    except PermissionError:
        return [Finding(False, f"{path}: run as root to read the device key")]
    except DeviceKeyError as e:
        return [Finding(False, f"device key: {e}")]
    return [Finding(False, f"device key fingerprint {fingerprint(key.public_key())}")]


def _spool(config: Config) -> list[Finding]:
    spool = config.device.state_dir / "spool"
    try:
        files = [p for rec in spool.iterdir() if rec.is_dir() and not rec.name.startswith(".")
                 for p in rec.iterdir() if p.name.endswith(".age")]
    except FileNotFoundError:
        return []
    except PermissionError:
        return [Finding(False, f"{spool}: run as root to see what waits to be uploaded")]
    if not files:
        return []
    size = sum(p.stat().st_size for p in files)
    return [Finding(False, f"{len(files)} sealed file(s), {size / 1e6:.1f} MB, wait in the spool "
                           "to be uploaded")]


def _swap() -> list[Finding]:
    try:
        swaps = Path("/proc/swaps").read_text()
    except OSError:
        return []
    try:
        controllers = Path("/sys/fs/cgroup/cgroup.controllers").read_text()
    except OSError:
        controllers = ""
    return swap_findings(swaps, controllers)


def swap_findings(proc_swaps: str, cgroup_controllers: str) -> list[Finding]:
    """P4: swap on a disk could hold the daemon's memory, unless the cgroup memory controller is
    there to enforce the unit's MemorySwapMax=0 (some Raspberry Pi kernels boot without it).
    Swap in RAM (zram) is harmless."""
    disks = [line.split()[0] for line in proc_swaps.splitlines()[1:]
             if line.strip() and not line.startswith("/dev/zram")]
    if not disks:
        return []
    if "memory" in cgroup_controllers.split():
        return [Finding(False, f"swap on {', '.join(disks)}: MemorySwapMax=0 keeps the daemon's "
                               "memory out of it")]
    return [Finding(True, f"swap on {', '.join(disks)} and no cgroup memory controller: the "
                          "daemon's memory could be written to disk (P4); turn that swap off "
                          "(swapoff, and remove it from /etc/fstab) or use zram")]


def _service() -> list[Finding]:
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return []
    try:
        state = subprocess.run([systemctl, "is-enabled", UNIT], capture_output=True, text=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return []
    if state == "enabled":
        return [Finding(False, f"{UNIT} is enabled")]
    return [Finding(False, f"{UNIT} is {state or 'not installed'}: once nothing is missing, "
                           "systemctl enable --now classcam")]


def _readable_by_daemon(path: Path) -> bool:
    """Whether the daemon's user could read `path` (by its mode bits; when that user does not
    exist, as on a developer's machine, whether we can)."""
    try:
        user = pwd.getpwnam(DAEMON_USER)
    except KeyError:
        return os.access(path, os.R_OK)
    try:
        st = path.stat()
    except OSError:
        return False
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if DAEMON_USER in g.gr_mem}
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & 0o400)
    if st.st_gid in groups:
        return bool(st.st_mode & 0o040)
    return bool(st.st_mode & 0o004)
