"""The files in systemd/, checked with systemd's own tools (Debian package `systemd`):
`systemd-analyze verify` and `security` on the unit, `systemd-sysusers` and `systemd-tmpfiles`
applied to a scratch root. Plus the lines that carry invariants, read from the unit itself.

A test is skipped only when the tool it needs is not installed.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"
UNIT = SYSTEMD_DIR / "classcam.service"
SYSUSERS = SYSTEMD_DIR / "classcam.sysusers"
TMPFILES = SYSTEMD_DIR / "classcam.tmpfiles"
INSTALLED_BINARY = "/usr/bin/classcam"

# systemd-analyze calls 1.0-3.9 "OK". We hold the unit to 2.5 (measured: 1.9 with systemd 252);
# the exact list of accepted exposures below catches any single protection that goes missing.
MAX_EXPOSURE = 2.5
# Every check `systemd-analyze security` may count against the unit, with why it must stay
# open (systemd/README.md, "Left out, and why"). Anything else exposed fails the test.
ACCEPTED_EXPOSURES = {
    "PrivateNetwork=": "uploads and health telemetry",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "uploads and health telemetry",
    "RestrictAddressFamilies=~AF_UNIX": "pad socket, journal, sd_notify",
    "RestrictAddressFamilies=~AF_NETLINK": "libcamera's udev hotplug monitor",
    "IPAddressDeny=": "the school's server addresses are not known here; IT may add a drop-in",
    "PrivateDevices=": "camera, GPIO and sound devices; DevicePolicy=closed instead",
    "DeviceAllow=": "the devices the daemon drives",
    "SupplementaryGroups=": "gpio, video, audio, classcam-pinpad",
    "PrivateTmp=": "replaced by a RAM-backed TemporaryFileSystem= (P4)",
    "PrivateUsers=": "the pad socket could not be given group classcam-pinpad",
    "ProcSubset=": "gpiozero reads the Pi's revision from /proc",
    "SystemCallFilter=~@privileged": "chown, to give the pad socket its group",
    "SystemCallFilter=~@resources": "OpenBLAS calls mbind",
    "RootDirectory=/RootImage=": "runs from the packaged /usr",
}

# Each Exec line the unit may have, and the only `classcam` subcommand it may run. Nothing in the
# unit may start a recording (P1: only a teacher at the unit can); it may start the daemon and
# darken the LED, nothing else.
ALLOWED_EXEC = {"ExecStart": "run", "ExecStopPost": "led-off"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package 'systemd'; ./dev test installs it)")
    return path


def _run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=30,
                          **kwargs)


def _unit_entries(path: Path = UNIT) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in order; a key may repeat."""
    entries, section, pending = [], None, ""
    for raw in path.read_text().splitlines():
        line = pending + raw.strip()
        pending = ""
        if not line or line[0] in "#;":
            continue
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not an assignment: {raw!r}"
        entries.append((section, key.strip(), value.strip()))
    return entries


def _service(key: str) -> list[str]:
    return [v for s, k, v in _unit_entries() if s == "Service" and k == key]


def _last(key: str) -> str | None:
    values = _service(key)
    return values[-1] if values else None


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    """The unit with /usr/bin/classcam replaced by this venv's `classcam` script.

    `systemd-analyze verify` checks that every Exec binary exists and is executable; on this
    machine the daemon is the venv's console script, not the package's /usr/bin/classcam. Only
    that path changes; the copy keeps the name classcam.service.
    """
    script = Path(sys.executable).parent / "classcam"
    assert os.access(script, os.X_OK), f"{script} is missing: run ./dev test to set up the venv"
    text = UNIT.read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(INSTALLED_BINARY, str(script)))
    return copy


def test_verify_passes_without_a_warning(unit_copy):
    analyze = _tool("systemd-analyze")
    # systemd 252's verify needs no special flags here: it does not resolve User=/Group= (that
    # happens when the unit starts, after systemd-sysusers has made them), and the unit has no
    # man: documentation links to look up. --recursive-errors=no keeps a warning in one of the
    # host's own units (sysinit.target and friends are loaded as dependencies) from failing
    # the exit status; such lines are reported but only our unit's lines fail the test.
    result = _run(analyze, "verify", "--recursive-errors=no", unit_copy, cwd=unit_copy.parent)
    ours = [line for line in result.stderr.splitlines() if _about_our_unit(line, unit_copy)]
    foreign = [line for line in result.stderr.splitlines() if line not in ours]
    if foreign:
        print("warnings about the host's units (not ours):", *foreign, sep="\n  ")
    assert ours == [], "\n".join(ours)
    assert result.returncode == 0, result.stderr


def _about_our_unit(line: str, copy: Path) -> bool:
    """A verify line is about another unit when it names another unit file or unit first."""
    first = line.split(":", 1)[0]
    if first.startswith("/"):
        return first == str(copy)
    if re.fullmatch(r"[\w@.\\-]+\.(service|socket|target|mount|slice|timer|path|scope|device|swap"
                    r"|automount)", first):
        return first == UNIT.name
    return True


def test_security_exposure_is_low_and_every_exposure_is_accepted(unit_copy):
    analyze = _tool("systemd-analyze")
    result = _run(analyze, "security", "--offline=true", unit_copy, cwd=unit_copy.parent)
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for classcam\.service: ([0-9.]+) (\w+)",
                      result.stdout)
    assert match, result.stdout
    exposure = float(match.group(1))
    print(f"systemd-analyze security: overall exposure {exposure} {match.group(2)}")

    checks = json.loads(_run(analyze, "security", "--offline=true", "--json=short", unit_copy,
                             cwd=unit_copy.parent).stdout)
    exposed = {c["name"]: c["exposure"] for c in checks if c.get("exposure")}
    unexpected = {name: e for name, e in exposed.items() if name not in ACCEPTED_EXPOSURES}
    assert unexpected == {}, f"newly exposed (add the protection back, or justify it): {unexpected}"
    assert exposure <= MAX_EXPOSURE, result.stdout


def test_unit_carries_the_invariant_lines():
    # Supervision: ready notification and a watchdog (pyCA-style), no restart on a bad config.
    assert _last("Type") == "notify"
    assert _last("NotifyAccess") == "main"
    watchdog = _last("WatchdogSec")
    assert watchdog and re.fullmatch(r"[1-9]\d*(ms|s|min)?", watchdog), watchdog
    assert _last("Restart") == "on-failure"
    assert "78" in " ".join(_service("RestartPreventExitStatus")).split()
    # P2: the LED is darkened after every end of the daemon, and a failure to do so is not
    # ignored ("-" prefix) nor run with privileges it does not need ("+", "!").
    stop_post = _service("ExecStopPost")
    assert any(shlex.split(v)[1:2] == ["led-off"] for v in stop_post), stop_post
    assert _last("KillMode") in (None, "control-group")
    # P2 on real hardware: the sim backends drive no real LED.
    assert "CLASSCAM_HW=pi" in " ".join(_service("Environment")).split()
    # P4: no core dumps, no swap of the daemon's memory, temporary files in RAM.
    assert _last("LimitCORE") == "0"
    assert _last("MemorySwapMax") == "0"
    tmpfs = " ".join(_service("TemporaryFileSystem")).split()
    assert {p.split(":")[0] for p in tmpfs} >= {"/tmp", "/var/tmp"}, tmpfs
    # Least privilege, the settings IT relies on in the README.
    assert _last("User") == "classcam"
    assert _last("CapabilityBoundingSet") == ""
    assert _last("NoNewPrivileges") == "yes"
    assert _last("ProtectSystem") == "strict"
    assert _last("UMask") == "0077"
    assert _last("DevicePolicy") == "closed"
    assert _last("MemoryDenyWriteExecute") == "yes"
    assert _last("StateDirectoryMode") == "0700"


def test_unit_can_only_start_the_daemon_and_darken_the_led():
    execs = [(k, v) for s, k, v in _unit_entries() if s == "Service" and k.startswith("Exec")]
    assert execs, "no Exec lines"
    for key, value in execs:
        assert key in ALLOWED_EXEC, f"{key}={value}: the unit runs only `run` and `led-off`"
        argv = shlex.split(value)
        assert argv[0] == INSTALLED_BINARY, f"{key}={value}: prefixes and other programs refused"
        assert argv[1] == ALLOWED_EXEC[key], f"{key}={value}"
        assert argv[2:] == ["--config", "/etc/classcam/classcam.toml"], f"{key}={value}"


def test_unit_sysusers_and_tmpfiles_agree():
    users = _sysusers_lines()
    made = {name for kind, name, *_ in users if kind in "ug"}
    member_of = {rest[0] for kind, name, *rest in users if kind == "m" and name == "classcam"}
    # Every group the unit names exists (an "m" line creates it) and classcam is in it.
    for group in " ".join(_service("SupplementaryGroups")).split():
        assert group in member_of, f"{group}: no `m classcam {group}` line in {SYSUSERS.name}"
    assert {"classcam", "classcam-pinpad"} <= made
    # StateDirectory= must not find a different owner or mode than tmpfiles sets, or it would
    # re-chown the spool on every start.
    state = _tmpfiles_lines()["/var/lib/classcam"]
    assert (state["mode"], state["user"], state["group"]) == (
        _last("StateDirectoryMode"), _last("User"), _last("Group"))


def _sysusers_lines() -> list[list[str]]:
    lines = []
    for raw in SYSUSERS.read_text().splitlines():
        if raw.strip() and not raw.lstrip().startswith("#"):
            lines.append(shlex.split(raw))
    return lines


def _tmpfiles_lines() -> dict[str, dict[str, str]]:
    entries = {}
    for raw in TMPFILES.read_text().splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        fields = raw.split() + ["-"] * 7
        kind, path, mode, user, group, age = fields[:6]
        entries[path] = {"type": kind, "mode": mode, "user": user, "group": group, "age": age}
    return entries


@pytest.fixture
def scratch_root(tmp_path) -> Path:
    """A root with the accounts made by `systemd-sysusers --root`, as the package's postinst
    makes them, so that systemd-tmpfiles --root can resolve the owner `classcam` (it reads the
    root's /etc/passwd, not the host's)."""
    sysusers = _tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    dry = _run(sysusers, f"--root={root}", "--dry-run", SYSUSERS)
    assert dry.returncode == 0, dry.stderr
    assert not (root / "etc" / "passwd").exists()
    result = _run(sysusers, f"--root={root}", SYSUSERS)
    assert result.returncode == 0, result.stderr
    return root


def _passwd(root: Path) -> dict[str, list[str]]:
    return {f[0]: f for f in (l.split(":") for l in (root / "etc/passwd").read_text().splitlines())}


def _groups(root: Path) -> dict[str, list[str]]:
    return {f[0]: f for f in (l.split(":") for l in (root / "etc/group").read_text().splitlines())}


def test_sysusers_makes_the_account_and_groups(scratch_root):
    user = _passwd(scratch_root)["classcam"]
    uid, gid, home, shell = int(user[2]), int(user[3]), user[5], user[6]
    assert 0 < uid < 1000, "a system account"
    assert home == "/var/lib/classcam"
    assert shell.endswith("nologin")
    groups = _groups(scratch_root)
    assert int(groups["classcam"][2]) == gid
    for group in ("classcam-pinpad", "gpio", "video", "audio"):
        assert "classcam" in groups[group][3].split(","), group


def test_sysusers_joins_groups_the_system_already_has(tmp_path):
    # Raspberry Pi OS already has gpio, video and audio: they are kept and classcam joins them.
    sysusers = _tool("systemd-sysusers")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc/group").write_text("root:x:0:\naudio:x:29:pi\nvideo:x:44:pi\ngpio:x:993:pi\n")
    result = _run(sysusers, f"--root={root}", SYSUSERS)
    assert result.returncode == 0, result.stderr
    groups = _groups(root)
    assert groups["gpio"][2] == "993" and groups["video"][2] == "44"
    for group in ("gpio", "video", "audio"):
        pad = {"classcam-pinpad"} if group == "audio" else set()  # the pad's tones
        assert set(groups[group][3].split(",")) == {"pi", "classcam"} | pad, groups[group]


def test_tmpfiles_makes_the_directories(scratch_root):
    tmpfiles = _tool("systemd-tmpfiles")
    result = _run(tmpfiles, f"--root={scratch_root}", "--create", TMPFILES)
    as_root = os.geteuid() == 0
    if as_root:
        assert result.returncode == 0, result.stderr
    else:
        # Not root: the directories are made, only giving them to their owners is refused.
        errors = [l for l in result.stderr.splitlines() if "Operation not permitted" not in l]
        assert errors == [], result.stderr
    uid = int(_passwd(scratch_root)["classcam"][2])
    expected = {
        "/etc/classcam": (0o755, 0),
        "/etc/classcam/teachers.d": (0o755, 0),
        "/var/lib/classcam": (0o700, uid),
        "/var/lib/classcam/spool": (0o700, uid),
    }
    for path, (mode, owner) in expected.items():
        st = (scratch_root / path.lstrip("/")).stat()
        assert oct(st.st_mode & 0o7777) == oct(mode), path
        if as_root:
            assert st.st_uid == owner, path


def test_tmpfiles_never_cleans_the_spool(scratch_root):
    # P7: a sealed segment waits in the spool for as long as the server is unreachable; only the
    # uploader deletes it, after the server confirmed its hash. No line may have an age.
    tmpfiles = _tool("systemd-tmpfiles")
    assert all(e["age"] == "-" for e in _tmpfiles_lines().values())
    assert _run(tmpfiles, f"--root={scratch_root}", "--create", TMPFILES).returncode in (0, 73)
    segment = scratch_root / "var/lib/classcam/spool/seg-000001.ts.age"
    segment.write_bytes(b"age-encryption.org/v1\n")
    year_ago = time.time() - 365 * 86400
    os.utime(segment, (year_ago, year_ago))
    result = _run(tmpfiles, f"--root={scratch_root}", "--clean", TMPFILES)
    assert result.returncode == 0, result.stderr
    assert segment.exists()
