"""A recording cut off by a power cut still says which microphone it was made with: the manifest
the restarted unit writes for it carries the `[audio] mode` the recording was made in, kept in
its spool directory when it began, not the mode configured at the restart."""
from __future__ import annotations

import time

import pytest

from formats.manifest import MANIFEST_FILE, open_manifest
from tests.media import identity, recording_dirs


@pytest.mark.parametrize("mode, mode_at_restart", [("none", "room"), ("room", "none")])
def test_a_manifest_written_after_a_power_cut_names_the_recordings_audio_mode(
        lab, mode, mode_at_restart):
    lab.settings["audio"] = {"mode": mode}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.start_recording("t-evans")["ok"]
        deadline = time.monotonic() + 20
        while not list(lab.spool_dir.glob("*/seg-*.ts.age")):  # one segment sealed
            assert time.monotonic() < deadline, "no segment was sealed"
            time.sleep(0.05)
        unit.kill()
    (rec,) = recording_dirs(lab)
    assert not (rec / MANIFEST_FILE).exists()  # the kill came before any manifest
    lab.settings["audio"] = {"mode": mode_at_restart}
    lab.write_config()
    with lab.daemon():
        pass  # the restart recovers the recording
    manifest = open_manifest((rec / MANIFEST_FILE).read_bytes(), identity(lab))
    assert manifest.body["ended_by"] == "interrupted"
    assert manifest.audio_mode == mode
