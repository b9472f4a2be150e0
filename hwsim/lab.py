"""A simulated classroom in a directory: teachers with keys and PINs, a unit configuration, and
the real daemon (`classcam run --hw sim`) running on it. The demo, the tests and the benchmarks
all start from here.

    lab = Lab.create(tmp_dir, teachers={"t-evans": "432187"})
    with lab.daemon() as unit:
        unit.control("press")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
    events = lab.timeline()

    with lab.account() as server, lab.daemon() as unit:   # uploads to the reference server
        unit.lesson()
        unit.wait_uploaded()
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable, Iterator

import tomli_w

from pinpad.keystore import Keystore
from teacher_tools.keys import TeacherKeyFiles, new_teacher_keys
from appliance.roster import Roster
from hwsim import timeline as timeline_file
from hwsim.account_server import AccountServer
from hwsim.control import ControlClient
from hwsim.keypad import enrol
from hwsim.pki import DEVICE, TEACHER, Credential, TestPki
from hwsim.security_key import SimSecurityKey

PASSPHRASE = "lab passphrase, not a secret"
DEVICE_ID = "sim-unit-1"


@dataclass
class Lab:
    """Files of one simulated classroom under `root`."""

    root: Path
    teachers: dict[str, str]  # teacher id -> PIN
    settings: dict = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path, teachers: dict[str, str] | None = None, enrolled: bool = True,
               security_keys: Iterable[str] = (), **settings) -> Lab:
        """Make keys for each teacher (as on their own computer), enrol their cards on the unit,
        put them on the simulated pad, and write the config. A teacher in `security_keys` gets a
        simulated FIDO2 security key whose PIN is theirs, with a classcam credential named in
        their card; the pad holds only their card. Every other teacher's signing key goes on
        the pad, sealed under their PIN. `settings` are extra TOML tables, e.g.
        `recording={"max_minutes": 0.05}`."""
        lab = cls(root, teachers or {"t-evans": "432187"}, settings)
        for d in (lab.keys_dir, lab.roster_dir, lab.state_dir, lab.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        for teacher_id, pin in lab.teachers.items():
            device = None
            if teacher_id in security_keys:  # enrolled as `classcam keys new --security-key`
                lab.security_keys_dir.mkdir(parents=True, exist_ok=True)
                device = SimSecurityKey(lab.security_keys_dir / f"{teacher_id}.json", pin=pin)
            new_teacher_keys(lab.keys_dir, teacher_id, teacher_id.replace("-", " ").title(),
                             PASSPHRASE, security_key=device, security_key_pin=pin)
            files = lab.key_files(teacher_id)
            if enrolled:
                Roster(lab.roster_dir).add(files.card.read_bytes())
            if teacher_id in security_keys:
                Keystore(lab.pad_dir).enrol(files.card.read_bytes(), None, None)
            else:
                enrol(lab.pad_dir, files.card, files.signing_key, PASSPHRASE, pin)
        lab.write_config()
        return lab

    def copy(self, root: Path, **settings) -> Lab:
        """The same classroom (keys, roster, pad) under `root`, with fresh state: making keys
        takes seconds (scrypt), copying them does not."""
        shutil.copytree(self.root, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns(
            "timeline.jsonl", "daemon.log", "var", "run", "pki", "account"))
        lab = Lab(root, dict(self.teachers), settings)
        for d in (lab.state_dir, lab.run_dir):
            d.mkdir(parents=True, exist_ok=True)
        lab.write_config()
        return lab

    keys_dir = property(lambda self: self.root / "teacher-computers")
    roster_dir = property(lambda self: self.root / "etc" / "teachers.d")
    state_dir = property(lambda self: self.root / "var")
    run_dir = property(lambda self: self.root / "run")
    pad_dir = property(lambda self: self.root / "pinpad")
    security_keys_dir = property(lambda self: self.root / "security-keys")
    config_path = property(lambda self: self.root / "etc" / "classcam.toml")
    timeline_path = property(lambda self: self.root / "timeline.jsonl")
    pad_socket = property(lambda self: self.run_dir / "pinpad.sock")
    control_socket = property(lambda self: self.run_dir / "sim-control.sock")
    log_path = property(lambda self: self.root / "daemon.log")
    pki_dir = property(lambda self: self.root / "pki")
    account_dir = property(lambda self: self.root / "account")
    spool_dir = property(lambda self: self.state_dir / "spool")

    def key_files(self, teacher_id: str) -> TeacherKeyFiles:
        return TeacherKeyFiles.in_dir(self.keys_dir, teacher_id)

    def write_config(self) -> None:
        tables = {
            "device": {"id": DEVICE_ID, "roster_dir": str(self.roster_dir),
                       "state_dir": str(self.state_dir), "runtime_dir": str(self.run_dir)},
            "notice": {"languages": ["en"]},
            "capture": {"width": 320, "height": 240, "fps": 25, "segment_seconds": 1,
                        "x264_preset": "ultrafast", "min_free_mb": 1},
            "pad": {"socket": str(self.pad_socket), "socket_group": ""},
            "clock": {"synchronised": "yes"},
            # Health (and the journal's lines) on a fast clock, as the simulator runs fast.
            "health": {"period_s": 0.5},
            "sim": {"timeline": str(self.timeline_path),
                    "control_socket": str(self.control_socket),
                    "pad_keystore": str(self.pad_dir),
                    "security_keys": str(self.security_keys_dir), "speed": 40.0},
        }
        for name, values in self.settings.items():
            table = tables.setdefault(name, {})
            table.update(values)
            for key in [key for key, value in values.items() if value is None]:
                del table[key]  # None leaves a setting out, e.g. sim={"pad_keystore": None}
        self.config_path.write_text(tomli_w.dumps(tables))

    @contextlib.contextmanager
    def daemon(self, start_timeout: float = 30.0) -> Iterator[RunningUnit]:
        """Run the real daemon in a subprocess; SIGTERM it on the way out. Unless the test
        killed it on purpose (`RunningUnit.kill`), a daemon that died, or did not exit with 0
        on SIGTERM, fails the test with `DaemonExitError`."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("NOTIFY_SOCKET", None)
        log = open(self.log_path, "ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", "--hw", "sim",
             "--config", str(self.config_path)], stdout=log, stderr=log, env=env)
        unit = RunningUnit(self, proc, log_offset=log.tell())
        try:
            unit.connect(start_timeout)
            yield unit
        finally:
            unit.terminate()
            log.close()
        unit.check_exit()  # only when the test itself passed: its own failure says more

    @contextlib.contextmanager
    def account(self, **upload) -> Iterator[AccountServer]:
        """Run the reference account server (HTTPS on loopback, a test CA) and point the unit's
        `[upload]` at it with a device certificate. `upload` overrides those settings; the
        defaults retry quickly, as tests want."""
        server = AccountServer(self.account_dir, self.pki())
        server.start()
        try:
            device = self.pki().issue(DEVICE_ID, DEVICE)
            self.settings["upload"] = {
                "url": server.url, "ca_bundle": str(self.pki().ca_cert),
                "client_cert": str(device.cert), "client_key": str(device.key),
                "connect_timeout_s": 2.0, "read_timeout_s": 5.0, "retry_max_s": 1.0,
                "hold_s": 5.0, **upload}
            self.write_config()
            yield server
        finally:
            server.stop()

    def pki(self) -> TestPki:
        """The test CA of this classroom's account server, made on first use."""
        if (self.pki_dir / "ca.pem").exists():
            return TestPki(self.pki_dir)
        return TestPki.create(self.pki_dir)

    def teacher_credential(self, teacher_id: str) -> Credential:
        """The certificate a teacher's own computer uses for their account."""
        return self.pki().issue(teacher_id, TEACHER)

    def spooled(self) -> list[Path]:
        """The recordings still on the unit."""
        if not self.spool_dir.exists():
            return []
        return sorted(p for p in self.spool_dir.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def timeline(self) -> list[dict]:
        """Every event the simulator recorded so far."""
        if not self.timeline_path.exists():
            return []
        return list(timeline_file.read(self.timeline_path))

    def journal(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class DaemonExitError(AssertionError):
    """The daemon died, or did not exit cleanly when asked to stop (P8)."""


class RunningUnit:
    """A daemon process of a `Lab`, driven through the simulator's control socket."""

    def __init__(self, lab: Lab, proc: subprocess.Popen, log_offset: int = 0):
        self.lab = lab
        self.proc = proc
        self._client: ControlClient | None = None
        self._log_offset = log_offset  # where this process's lines start in the lab's log
        self._killed = False       # SIGKILLed by the test (a power cut): no status to check
        self._sigterm_sent = False
        self._forced = False       # still running long after SIGTERM, so SIGKILLed

    def connect(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited with {self.proc.returncode}:\n"
                                   f"{self.lab.journal()}")
            try:
                self._client = ControlClient(self.lab.control_socket)
                if self._client("status").get("ok") and self.lab.pad_socket.exists():
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"daemon did not come up:\n{self.lab.journal()}")

    def control(self, cmd: str, **args) -> dict:
        """Send one control command and return the reply."""
        assert self._client is not None
        return self._client(cmd, **args)

    def state(self) -> str:
        return self.control("status")["state"]

    def wait_state(self, state: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state() == state:
                return
            time.sleep(0.01)
        raise TimeoutError(f"unit did not reach {state!r}; it is {self.state()!r}")

    def start_recording(self, teacher: str | None = None) -> dict:
        """Press, type the teacher's PIN and, if the unit took it, wait until it records;
        returns the pad's result."""
        teacher = teacher or next(iter(self.lab.teachers))
        self.control("press")
        self.wait_state("armed")
        result = self.control("pin", teacher=teacher, pin=self.lab.teachers[teacher])["result"]
        if result["ok"]:
            self.wait_state("recording")
        return result

    def lesson(self, teacher: str | None = None, seconds: float = 0.5) -> dict:
        """Press, type the PIN, record for `seconds`, press stop; returns the pad's result."""
        result = self.start_recording(teacher)
        if result["ok"]:
            time.sleep(seconds)  # the lesson's length: nothing to wait for
            self.control("press")
            self.wait_state("idle")
        return result

    def wait_journal(self, text: str, timeout: float = 10.0) -> None:
        """Until `text` is in the journal: the daemon writes its lines on the health tick only
        (P9), so a line shows up to one period after what it tells of."""
        deadline = time.monotonic() + timeout
        while text not in self.lab.journal():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not in the journal after {timeout:g} s: {text!r}")
            time.sleep(0.05)

    def wait_uploaded(self, timeout: float = 60.0) -> None:
        """Until the unit holds no recording: everything confirmed by the server and purged."""
        deadline = time.monotonic() + timeout
        while self.lab.spooled():
            if time.monotonic() > deadline:
                raise TimeoutError(f"still on the unit after {timeout:g} s: "
                                   f"{[p.name for p in self.lab.spooled()]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: a power cut, as far as the daemon can tell."""
        self._killed = True
        self.proc.kill()
        self.proc.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, as systemd stops the unit; returns the exit status (SIGKILL after
        `timeout`)."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self.proc.poll() is None:
            self._sigterm_sent = True
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._forced = True
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def check_exit(self) -> None:
        """Raise `DaemonExitError` unless the daemon was killed on purpose (`kill`) or exited
        with 0 when it was asked to stop."""
        if self._killed:
            return
        status = self.proc.returncode
        if not self._sigterm_sent:
            why = f"the daemon exited by itself, with status {_status(status)}"
        elif self._forced:
            why = "the daemon was still running long after SIGTERM and had to be SIGKILLed"
        elif status != 0:
            why = f"the daemon exited with status {_status(status)} on SIGTERM"
        else:
            return
        raise DaemonExitError(f"{why}; the end of its log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last `lines` lines this daemon process wrote to the lab's log."""
        try:
            with open(self.lab.log_path, "rb") as f:
                f.seek(self._log_offset)
                text = f.read().decode(errors="replace")
        except OSError as e:
            return f"(cannot read {self.lab.log_path}: {e})"
        return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


def _status(returncode: int) -> str:
    if returncode < 0:
        return f"{returncode} (killed by {signal.Signals(-returncode).name})"
    return str(returncode)
