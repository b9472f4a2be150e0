"""What typing the daemon and the teacher's tool brought to light: a timestamp that can be
missing is refused with its reason, and a float quota no longer shows in the storage fault."""
from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path

import av
import pytest

from appliance.config import parse
from appliance.notice import Notices, Sound
from appliance.roster import Roster, TeacherCard
from appliance.token import mint
from appliance.unit import State, Unit
from capture.devices import CaptureError
from capture.pipeline import CaptureSettings, Segmenter
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hwsim.factory import make_sim_hardware
from hwsim.lab import DEVICE_ID, PASSPHRASE
from teacher_tools.decrypt import KnownDevices, RecordingRefused, decrypt_recording
from teacher_tools.keys import load_signing_key
from tests.media import identity, recording_dirs
from uploader.spool import Spool


def test_segmenter_refuses_a_packet_without_a_presentation_time(tmp_path):
    segmenter = Segmenter(tmp_path, "age1unused", CaptureSettings(), lambda p: 1 << 40)
    packet = av.Packet(b"\0" * 8)
    packet.dts = 0  # a decode time, but no presentation time
    with pytest.raises(CaptureError, match="without a timestamp"):
        segmenter.route(packet, False)
    assert list(tmp_path.iterdir()) == []


def test_storage_fault_names_whole_megabytes_when_the_quota_leaves_too_little_room(lab_template):
    files = lab_template.key_files("t-evans")
    key = load_signing_key(files.signing_key, PASSPHRASE)
    card = TeacherCard.parse(files.card.read_bytes())

    async def scenario(root: Path) -> tuple[object, list[dict]]:
        config = parse({
            "device": {"id": DEVICE_ID, "roster_dir": str(lab_template.roster_dir),
                       "state_dir": str(root / "var")},
            "capture": {"min_free_mb": 1},
            "spool": {"quota_mb": 1},  # 1 MB of room: less than a recording needs to start
            "clock": {"synchronised": "yes"},
            "sim": {"realtime": False, "speed": 100.0}})
        hw = make_sim_hardware(config)
        beep = Sound("notice", b"\0\0" * 800, 16000)
        spool = Spool(root / "var" / "spool")
        unit = Unit(config, Roster(config.device.roster_dir), spool, hw,
                    Notices(beep, beep, beep, beep), Ed25519PrivateKey.generate(), lambda: True)
        try:
            await unit.press()
            result = await unit.present(mint(key, "t-evans", DEVICE_ID, unit.challenge,
                                             card.recipient))
            assert unit.state is State.IDLE
            return result, list(hw.parts.timeline.events)
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()

    with tempfile.TemporaryDirectory(prefix="cc-") as root:
        result, events = asyncio.run(scenario(Path(root)))
    assert result.reason == "storage full"
    (fault,) = [e for e in events if e["ev"] == "fault"]
    assert fault["component"] == "storage"
    assert fault["reason"].startswith("only 1 MB of room for recordings")


class _VideoWithoutPts:
    """An input container whose video packets carry a decode time but no presentation time."""

    def __init__(self, container):
        self._container = container
        self.streams = container.streams

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._container.close()

    def demux(self, *streams):
        for packet in self._container.demux(*streams):
            if packet.dts is not None and packet.stream.type == "video":
                packet.pts = None
            yield packet


def test_decrypt_refuses_a_segment_packet_without_a_presentation_time(lab_template, short_dir,
                                                                      tmp_path, monkeypatch):
    lab = lab_template.copy(short_dir)
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.2)["ok"]
    (directory,) = recording_dirs(lab)
    real_open = av.open

    def open_(file, *args, **kwargs):
        container = real_open(file, *args, **kwargs)
        return _VideoWithoutPts(container) if isinstance(file, io.BytesIO) else container

    monkeypatch.setattr(av, "open", open_)
    output = tmp_path / "lesson.mp4"
    with pytest.raises(RecordingRefused) as refused:
        decrypt_recording(directory, identity(lab), output, KnownDevices(tmp_path / "known"),
                          trust_new_unit=True)
    assert refused.value.reasons == ["seg-000001.ts.age holds a packet without a presentation "
                                     "time"]
    assert not output.exists() and not (tmp_path / ".lesson.mp4.partial").exists()
