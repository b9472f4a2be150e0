"""A teacher who enrolled a security key (`classcam keys new --security-key`) starts recordings
with it only: a token signed by the key file on their computer, valid in every other way, is
refused, so a copied key file and its passphrase do not start a recording without the key
itself. The same token from a teacher without a security key starts one."""
from __future__ import annotations

from formats.card import TeacherCard
from formats.starttoken import mint
from hwsim.invariants import device_intervals
from hwsim.lab import DEVICE_ID, Lab
from tests.fido_keys import signing_key
from tests import test_fido_assertion as fido
from tests.test_fido_assertion import good, refused, run

room = fido.room  # the fixture: a lab whose teachers have security keys in their cards


def token_from_key_file(lab: Lab, teacher_id: str = "t-evans"):
    """The pad step: a start token minted with the teacher's key file, otherwise valid."""
    def make(r, challenge: dict) -> dict:
        files = lab.key_files(teacher_id)
        card = TeacherCard.parse((lab.roster_dir / f"{teacher_id}.json").read_bytes())
        return {"type": "token", "token": mint(signing_key(files.signing_key), teacher_id,
                                               DEVICE_ID, challenge["nonce"], card.recipient)}
    return make


def test_a_teacher_with_a_security_key_cannot_start_with_a_token(room, tmp_path):
    out = run(room, tmp_path, token_from_key_file(room.lab), good)
    assert out.results[0] == refused("use your security key")
    assert out.results[1]["ok"]  # the key itself still starts a recording
    assert [device for device, _, _ in device_intervals(out.events)].count("camera") == 1


def test_a_teacher_without_one_starts_with_a_token(room, lab_template, tmp_path):
    lab = lab_template.copy(tmp_path / "lab")  # its cards name no security key
    out = run(room, tmp_path / "unit", token_from_key_file(lab), lab=lab)
    assert out.results[0]["ok"]
