"""[audio] mode = "none": video only. The room is told "video only" (English and Welsh), no
microphone is opened, the segments have no audio stream, the manifest records the mode, and
`classcam decrypt` makes a lesson without sound. The configuration refuses a mode it does not
know, and "teacher" without the teacher's microphone, naming the key; a manifest from before
modes still opens."""
from __future__ import annotations

import io
import json
import subprocess

import av
import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.config import ConfigError, parse
from formats.manifest import MANIFEST_FILE, ManifestRejected, open_manifest, seal
from hwsim.invariants import check_all
from teacher_tools.decrypt import decrypt_recording
from tests.media import identity, recording_dirs
from tests.test_audio_manifest import BODY

MICROPHONES = ("microphone", "teacher_microphone")


def _start_notice(events: list[dict]) -> str:
    (start,) = [e for e in events if e["ev"] == "notice" and e["label"] == "start"
                and e["phase"] == "start"]
    return start["text"]


def _stream_kinds(path) -> list[str]:
    return [s["codec_type"] for s in json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True, capture_output=True, timeout=60).stdout)["streams"]]


@pytest.mark.parametrize("encoder", ["libx264", "picamera2"])
def test_mode_none_records_no_sound_and_the_room_is_told_video_only(lab, tmp_path, encoder):
    lab.settings["audio"] = {"mode": "none"}
    lab.settings["notice"] = {"languages": ["en", "cy"]}
    lab.settings["sim"] = {"encoder": encoder}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.5)["ok"]
    events = lab.timeline()
    assert check_all(events) == []
    said = _start_notice(events)
    assert "video only" in said and "fideo yn unig" in said and "audio" not in said
    opened = [e["device"] for e in events if e["ev"] == "device" and e["phase"] == "open"]
    assert opened == ["camera"]  # no microphone, ever

    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    segments = sorted(rec.glob("seg-*.ts.age"))
    assert segments
    for path in segments:
        with av.open(io.BytesIO(pyrage.decrypt(path.read_bytes(), [ident]))) as container:
            assert len(container.streams.video) == 1 and len(container.streams.audio) == 0
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    assert manifest.audio_mode == "none" and manifest.body["audio_overflows"] == 0

    out = tmp_path / "lesson.mp4"
    lesson = decrypt_recording(rec, ident, out, known=None, trust_new_unit=True)
    assert lesson.audio_mode == "none" and lesson.video_frames >= 30
    assert _stream_kinds(out) == ["video"]


def test_mode_room_says_video_and_audio_and_records_sound(lab, tmp_path):
    lab.settings["audio"] = {"mode": "room"}
    lab.settings["notice"] = {"languages": ["en", "cy"]}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.0)["ok"]
    events = lab.timeline()
    said = _start_notice(events)
    assert "video and audio" in said and "fideo a sain" in said and "video only" not in said
    (rec,) = recording_dirs(lab)
    assert open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab)).audio_mode == "room"
    out = tmp_path / "lesson.mp4"
    decrypt_recording(rec, identity(lab), out, known=None, trust_new_unit=True)
    assert _stream_kinds(out) == ["video", "audio"]


@pytest.mark.parametrize("audio, message", [
    ({"mode": "teacher"}, 'audio: teacher_microphone must name a device with mode = "teacher"'),
    ({"mode": "teacher", "teacher_microphone": " "}, "audio: teacher_microphone must name"),
    ({"mode": "pupils"}, "audio.mode: Input should be 'room', 'teacher' or 'none'"),
])
def test_a_bad_audio_mode_is_a_config_error_naming_the_key(tmp_path, audio, message):
    with pytest.raises(ConfigError) as refused:
        parse({"device": {"id": "classcam-unit", "roster_dir": str(tmp_path)}, "audio": audio})
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_a_manifest_from_before_audio_modes_opens_and_a_bad_mode_is_refused():
    ident, device_key = pyrage.x25519.Identity.generate(), Ed25519PrivateKey.generate()
    recipient = str(ident.to_public())
    assert open_manifest(seal(dict(BODY), device_key, recipient), ident).audio_mode is None
    sealed = seal({**BODY, "audio_mode": "teacher"}, device_key, recipient)
    assert open_manifest(sealed, ident).audio_mode == "teacher"
    with pytest.raises(ManifestRejected, match="audio mode"):
        open_manifest(seal({**BODY, "audio_mode": "everyone"}, device_key, recipient), ident)


def test_decrypt_refuses_sound_in_a_recording_whose_manifest_says_video_only(lab, tmp_path):
    from teacher_tools.decrypt import RecordingRefused
    lab.settings["audio"] = {"mode": "room"}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.0)["ok"]
    (rec,) = recording_dirs(lab)
    ident = identity(lab)
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), ident)
    # Re-signed by another unit's key (the teacher trusts a new unit here): the manifest says
    # video only, the segments hold sound.
    (rec / MANIFEST_FILE).write_bytes(seal({**manifest.body, "audio_mode": "none"},
                                           Ed25519PrivateKey.generate(), str(ident.to_public())))
    with pytest.raises(RecordingRefused, match="holds sound, but the manifest says the unit "
                                               "recorded video only"):
        decrypt_recording(rec, ident, tmp_path / "lesson.mp4", known=None, trust_new_unit=True)
    assert not (tmp_path / "lesson.mp4").exists()
