"""The manifest says how often the microphone lost samples (`audio_overflows`), from the
microphone the recording used; a manifest written before that field existed still opens."""
from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.unit import State
from formats.manifest import MANIFEST_FILE, ManifestRejected, open_manifest, seal
from tests.media import identity
from tests.test_attack_unit import _record_a_segment, _until
from tests.inprocess import sim_unit

BODY = {"recording_id": "ab" * 16, "teacher_id": "t-evans", "device_id": "sim-unit-1",
        "complete": True, "ended_by": "stop", "start": {"monotonic": 1.0, "wall": 2.0},
        "end": {"monotonic": 3.0, "wall": 4.0}, "segments": []}


@pytest.fixture(scope="module")
def keys():
    return pyrage.x25519.Identity.generate(), Ed25519PrivateKey.generate()


def test_a_manifest_from_before_audio_overflows_still_opens(keys):
    identity, device_key = keys
    manifest = open_manifest(seal(dict(BODY), device_key, str(identity.to_public())), identity)
    assert "audio_overflows" not in manifest.body


def test_a_manifest_with_an_overflow_count_that_is_not_a_number_is_refused(keys):
    identity, device_key = keys
    sealed = seal({**BODY, "audio_overflows": "many"}, device_key, str(identity.to_public()))
    with pytest.raises(ManifestRejected, match="malformed"):
        open_manifest(sealed, identity)


def test_the_recordings_manifest_counts_the_microphones_overflows(lab_template):
    async def scenario(root: Path) -> None:
        unit, hw, spool = sim_unit(lab_template, root)
        try:
            await _record_a_segment(lab_template, unit, spool)
            hw.microphone.overflows = 3  # as capture.audio counts them while recording
            await unit.stop()
            await _until(lambda: unit.state is State.IDLE)
            (recording,) = spool.recordings()
            manifest = open_manifest((recording.path / MANIFEST_FILE).read_bytes(),
                                     identity(lab_template))
            assert manifest.body["audio_overflows"] == 3
        finally:
            await unit.shutdown()
            spool.close()
            hw.close()

    with tempfile.TemporaryDirectory(prefix="cc-") as root:
        asyncio.run(scenario(Path(root)))
