"""The daemon's user cannot read the pad's keystore, and the pad's user cannot read the spool or
the device key: checked by the kernel, with the real accounts and directories.

The accounts come from our sysusers file (`systemd-sysusers --root`, a scratch root, so the
host's /etc/passwd is not touched), the directories from our tmpfiles file (`systemd-tmpfiles
--root --create`, as root: owners and modes as on a unit). The daemon's own code then writes
the device key and a recording's files as the daemon's user; IT enrols a teacher on the pad as
root (`Keystore.enrol`, which gives the files to the pad's account). Each read is tried in a
child process that has taken the account's uid, gid and groups (setgroups/setresgid/setresuid).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_systemd import _groups, _passwd, _run, _tool

SYSTEMD_DIR = Path(__file__).resolve().parent.parent / "systemd"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to take other uids")


def _account(root: Path, user: str) -> tuple[int, int, list[int]]:
    entry = _passwd(root)[user]
    groups = [int(f[2]) for f in _groups(root).values() if user in f[3].split(",")]
    return int(entry[2]), int(entry[3]), groups


# Runs as root to import everything, then becomes the account and tries each action.
_AS = """
import json, os, sys
from pathlib import Path
from appliance import device_key
from uploader.spool import Spool
uid, gid, groups, actions = json.loads(sys.argv[1])
os.setgroups(groups); os.setresgid(gid, gid, gid); os.setresuid(uid, uid, uid)
os.umask(0o077)
out = {}
for name, action, path in actions:
    try:
        if action == "read":
            Path(path).read_bytes()
        elif action == "list":
            os.listdir(path)
        elif action == "device_key":
            device_key.load_or_create(Path(path))
        elif action == "record":
            Spool(Path(path)).new_recording("t-evans", "age1recipient").path
        out[name] = "ok"
    except PermissionError:
        out[name] = "denied"
    except Exception as e:
        out[name] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
"""


def _as(account: tuple[int, int, list[int]], *actions: tuple[str, str, Path]) -> dict:
    uid, gid, groups = account
    arg = json.dumps([uid, gid, groups, [(n, a, str(p)) for n, a, p in actions]])
    result = subprocess.run([sys.executable, "-c", _AS, arg], capture_output=True, text=True,
                            timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def unit_root(lab_template):
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    # Not under pytest's 0700 temporary directory: the accounts must be able to walk down to
    # the files for a "denied" to mean the files' own modes.
    root = Path(tempfile.mkdtemp(prefix="cc-perm-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        (root / "etc").mkdir()
        made = _run(sysusers, f"--root={root}", SYSTEMD_DIR / "classcam.sysusers")
        assert made.returncode == 0, made.stderr
        made = _run(tmpfiles, f"--root={root}", "--create", SYSTEMD_DIR / "classcam.tmpfiles")
        assert made.returncode == 0, made.stderr
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_daemon_cannot_read_the_pads_keys_and_the_pad_cannot_read_the_spool(unit_root,
                                                                                 lab_template):
    from pinpad.keystore import Keystore
    from teacher_tools.keys import load_signing_key
    from hwsim.lab import PASSPHRASE

    daemon = _account(unit_root, "classcam")
    pad = _account(unit_root, "classcam-pinpad")
    state, keystore = unit_root / "var/lib/classcam", unit_root / "var/lib/classcam-pinpad"
    # The daemon makes its key and a recording, with its own code, as itself.
    made = _as(daemon, ("key", "device_key", state), ("rec", "record", state / "spool"))
    assert made == {"key": "ok", "rec": "ok"}
    key_file = next(p for p in state.iterdir() if p.is_file())
    recording = next(p for p in (state / "spool").iterdir() if p.is_dir())
    spool_file = next(p for p in recording.iterdir() if p.is_file())
    # IT enrols a teacher on the pad, as root.
    files = lab_template.key_files("t-evans")
    Keystore(keystore).enrol(files.card.read_bytes(),
                             load_signing_key(files.signing_key, PASSPHRASE), "432187")
    sealed = keystore / "1" / "key.sealed"
    assert sealed.stat().st_uid == pad[0], "enrolment gives the files to the pad's account"

    # Each reads its own (else every "denied" below would prove nothing) ...
    assert _as(daemon, ("key", "read", key_file), ("seg", "read", spool_file)) == {
        "key": "ok", "seg": "ok"}
    assert _as(pad, ("sealed", "read", sealed), ("store", "list", keystore)) == {
        "sealed": "ok", "store": "ok"}
    # ... and not the other's.
    assert _as(daemon, ("sealed", "read", sealed), ("card", "read", keystore / "1/card.json"),
               ("store", "list", keystore), ("teacher", "list", keystore / "1")) == {
        "sealed": "denied", "card": "denied", "store": "denied", "teacher": "denied"}
    assert _as(pad, ("key", "read", key_file), ("seg", "read", spool_file),
               ("state", "list", state), ("spool", "list", state / "spool"),
               ("recording", "list", recording)) == {
        "key": "denied", "seg": "denied", "state": "denied", "spool": "denied",
        "recording": "denied"}
