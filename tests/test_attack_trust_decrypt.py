"""`classcam decrypt` against a hostile account server (issue 13, trust item 4): a unit neither
pinned nor known is not trusted on first use unless the teacher says so, another recording served
under the id asked for is refused, and the lesson is written readable by its owner alone."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pyrage
import pytest

from appliance import device_key
from teacher_tools.decrypt import KnownDevices, RecordingRefused, decrypt_recording
from formats.keytext import b64, fingerprint
from formats.manifest import MANIFEST_FILE
from hwsim.lab import PASSPHRASE
from tests.media import identity, recording_dirs


@pytest.fixture(scope="module")
def recorded(lab_template):
    """Two recordings by t-evans on one unit, and that unit's manifest key fingerprint."""
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root)
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.2)["ok"]
        assert unit.lesson("t-evans", seconds=1.2)["ok"]
    first, second = recording_dirs(lab)
    yield lab, first, second, fingerprint(device_key.load(lab.state_dir).public_key())
    shutil.rmtree(root, ignore_errors=True)


def download(source: Path, into: Path) -> Path:
    """The ciphertext files of `source`, as `account get` leaves them in `into`."""
    into.mkdir(parents=True)
    for path in source.glob("*.age"):
        shutil.copy(path, into / path.name)
    return into


def classcam_decrypt(lab, *args: str, umask: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", "decrypt", "--identity",
         str(lab.key_files("t-evans").identity), *args],
        env=dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE), capture_output=True, text=True,
        timeout=120, preexec_fn=None if umask is None else lambda: os.umask(umask))


def test_a_unit_neither_pinned_nor_known_is_refused_with_its_fingerprint(recorded, tmp_path):
    lab, first, _, device = recorded
    files = download(first, tmp_path / "files")
    known = tmp_path / "known_devices.json"
    out = tmp_path / "lesson.mp4"
    with pytest.raises(RecordingRefused) as refused:
        decrypt_recording(files, identity(lab), out, KnownDevices(known))
    assert refused.value.reasons == [
        f"unit 'sim-unit-1' is not known here and no device fingerprint was given: its manifest "
        f"key is {device}; compare it with `classcam keys device` on the unit, then give it with "
        "--device-fingerprint (or --trust-new-unit)"]
    with pytest.raises(RecordingRefused, match="is not known here"):
        decrypt_recording(files, identity(lab), out, known=None)
    assert not out.exists() and not known.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["files"]


def test_the_cli_trusts_a_new_unit_only_when_told_and_remembers_it(recorded, tmp_path):
    lab, first, _, device = recorded
    files = download(first, tmp_path / "files")
    known = tmp_path / "known_devices.json"
    out = tmp_path / "lesson.mp4"
    common = ["--known-devices", str(known), str(files), "-o", str(out)]
    run = classcam_decrypt(lab, *common)
    assert run.returncode == 1 and run.stdout == "" and not out.exists() and not known.exists()
    assert run.stderr.startswith(f"classcam: {files}: refused: unit 'sim-unit-1' is not known")
    assert device in run.stderr and run.stderr.count("\n") == 1
    run = classcam_decrypt(lab, "--trust-new-unit", *common)
    assert run.returncode == 0, run.stderr
    assert f"made by sim-unit-1, key {device} (first recording from this unit: remembered" \
        in run.stdout
    assert KnownDevices(known).fingerprint("sim-unit-1") == device
    # Known from now on: no flag needed.
    out.unlink()
    run = classcam_decrypt(lab, *common)
    assert run.returncode == 0 and f"key {device} (known;" in run.stdout


def test_a_pinned_unit_needs_no_trust_on_first_use(recorded, tmp_path):
    lab, first, _, device = recorded
    files = download(first, tmp_path / "files")
    lesson = decrypt_recording(files, identity(lab), tmp_path / "lesson.mp4",
                               KnownDevices(tmp_path / "known.json"), device_fingerprint=device)
    assert lesson.device_fingerprint == device and lesson.recording_id == first.name


def test_another_recording_served_under_the_id_asked_for_is_refused(recorded, tmp_path):
    lab, first, second, device = recorded
    # `account get FIRST` wrote into ./FIRST what the server sent: the second recording's files.
    files = download(second, tmp_path / first.name)
    out = tmp_path / "lesson.mp4"
    reason = f"these files are recording '{second.name}', not recording {first.name} asked for"
    with pytest.raises(RecordingRefused) as refused:
        decrypt_recording(files, identity(lab), out, KnownDevices(tmp_path / "known.json"),
                          device_fingerprint=device, recording_id=first.name)
    assert refused.value.reasons == [reason]
    # The CLI takes the id from the directory `account get` named, or from --recording-id.
    run = classcam_decrypt(lab, "--device-fingerprint", device, str(files), "-o", str(out))
    assert run.returncode == 1 and run.stderr == f"classcam: {files}: refused: {reason}\n"
    elsewhere = files.rename(tmp_path / "lesson-files")
    run = classcam_decrypt(lab, "--device-fingerprint", device, "--recording-id", first.name,
                           str(elsewhere), "-o", str(out))
    assert run.returncode == 1 and run.stderr.endswith(f"refused: {reason}\n")
    assert not out.exists()
    # The right id decrypts, and says which recording it is.
    run = classcam_decrypt(lab, "--device-fingerprint", device, "--recording-id", second.name,
                           str(elsewhere), "-o", str(out))
    assert run.returncode == 0 and f"recording {second.name}," in run.stdout


@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask 022", "umask 000"])
def test_the_lesson_is_written_readable_by_its_owner_alone(recorded, tmp_path, umask):
    lab, first, _, device = recorded
    files = download(first, tmp_path / first.name)
    out = tmp_path / "lesson.mp4"
    run = classcam_decrypt(lab, "--device-fingerprint", device, str(files), "-o", str(out),
                           umask=umask)
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_a_stale_partial_file_is_replaced_not_reused(recorded, tmp_path):
    lab, first, _, device = recorded
    files = download(first, tmp_path / "files")
    out = tmp_path / "lesson.mp4"
    stale = tmp_path / ".lesson.mp4.partial"  # left by a run killed half way
    stale.write_bytes(b"x" * 100)
    stale.chmod(0o644)
    decrypt_recording(files, identity(lab), out, None, device_fingerprint=device)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and not stale.exists()


def test_a_manifest_signed_for_a_small_order_device_key_is_refused(recorded, tmp_path):
    # The small-order check of teacher cards holds for the unit's manifest key as well: with the
    # identity point as "key", the signature (identity, 0) verifies without any private key.
    lab, first, _, _ = recorded
    files = download(first, tmp_path / "files")
    ident = identity(lab)
    envelope = json.loads(pyrage.decrypt((files / MANIFEST_FILE).read_bytes(), [ident]))
    no_key = (1).to_bytes(32, "little")
    envelope.update(device_key=b64(no_key), signature=b64(no_key + bytes(32)))
    (files / MANIFEST_FILE).write_bytes(pyrage.encrypt(json.dumps(envelope).encode(),
                                                       [ident.to_public()]))
    with pytest.raises(RecordingRefused, match="manifest is malformed"):
        decrypt_recording(files, ident, tmp_path / "lesson.mp4", None, trust_new_unit=True)
