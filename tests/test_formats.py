"""The floor the unit and the teacher's tools share (formats/): one id rule that every user of it
applies alike, and durable writes that work where a directory cannot be opened (Windows)."""
from __future__ import annotations

import os
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.config import ConfigError, parse
from appliance.roster import Roster
from formats import ids
from formats.card import CardRejected, TeacherCard
from formats.durable import atomic_write, fsync_dir
from hwsim.account_api import Refusal, parse_address
from teacher_tools.account import Account, AccountError

GOOD = ["t-evans", "a", "0.x_y-z", "t" * 64]
BAD = ["t-evans\n", "t-evans\r\n", "\nt-evans", "t-evans ", "T-Evans", "", "-t", ".t", "t" * 65,
       "t-évans", "t/evans", "t\x00"]


def accepted_by_each_user(teacher_id: str, tmp_path: Path) -> dict[str, bool]:
    """Whether each part that takes a teacher id accepts `teacher_id`."""
    key = Ed25519PrivateKey.generate()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    found = {"rule": ids.is_teacher_id(teacher_id)}
    try:
        TeacherCard.create(teacher_id, "A Teacher", key, recipient)
        found["card"] = True
    except CardRejected:
        found["card"] = False
    found["roster"] = ids.is_teacher_id(teacher_id) and Roster(tmp_path).get(teacher_id) is None \
        and Roster(tmp_path).remove(teacher_id) is False  # reaches the disk only when valid
    try:
        Account("https://127.0.0.1:1", teacher_id, tmp_path / "c", tmp_path / "k", None).close()
        found["account client"] = True
    except AccountError:
        found["account client"] = False
    try:
        parse_address(f"/v1/teachers/{teacher_id}/recordings")
        found["account server"] = True
    except Refusal as r:
        assert r.status in (400, 404)  # a "/" in the id makes another address
        found["account server"] = False
    return found


@pytest.mark.parametrize("teacher_id", GOOD + BAD)
def test_every_part_applies_one_teacher_id_rule(teacher_id, tmp_path):
    found = accepted_by_each_user(teacher_id, tmp_path)
    assert set(found.values()) == {teacher_id in GOOD}, found


@pytest.mark.parametrize("device_id, ok", [("sim-unit-1", True), ("Unit.2_b", True),
                                            ("sim-unit-1\n", False), ("-unit", False),
                                            ("u" * 65, False)])
def test_the_config_applies_the_device_id_rule(device_id, ok, tmp_path):
    assert ids.is_device_id(device_id) is ok
    raw = {"device": {"id": device_id, "roster_dir": str(tmp_path)}}
    if ok:
        assert parse(raw).device.id == device_id
    else:
        with pytest.raises(ConfigError, match=r"device\.id: device id .* must be 1-64"):
            parse(raw)


def test_recording_ids_and_file_names_are_whole_matches():
    assert ids.is_recording_id("0123456789abcdef0123456789abcdef")
    assert not ids.is_recording_id("0123456789abcdef0123456789abcdef\n")
    assert [ids.is_file_name(n) for n in ("seg-000001.ts.age", "manifest.age",
                                          "manifest.age\n", "../manifest.age",
                                          "seg-1.ts.age")] == [True, True, False, False, False]


def test_durable_writes_work_where_a_directory_cannot_be_opened(tmp_path, monkeypatch):
    # As on Windows: no O_DIRECTORY (a directory cannot be opened, so not fsynced) and no fchmod.
    monkeypatch.delattr(os, "O_DIRECTORY")
    monkeypatch.delattr(os, "fchmod")
    atomic_write(tmp_path / "known_devices.json", b"{}\n")
    atomic_write(tmp_path / "known_devices.json", b'{"unit": "f968"}\n')
    assert (tmp_path / "known_devices.json").read_bytes() == b'{"unit": "f968"}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["known_devices.json"]
    fsync_dir(tmp_path)


def test_durable_writes_set_the_mode_whatever_the_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write(tmp_path / "card.json", b"{}", mode=0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "card.json").stat().st_mode & 0o777 == 0o644
