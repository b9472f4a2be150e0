"""The manifest's `pauses`: written in order as [start, end], read back; a manifest from before
pauses existed still opens with none; malformed pauses are refused."""
from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from formats.manifest import MANIFEST_FILE, ManifestRejected, open_manifest, seal, write_manifest
from tests.media import identity

BODY = {"recording_id": "ab" * 16, "teacher_id": "t-evans", "device_id": "unit-1",
        "complete": True, "ended_by": "stop", "start": {}, "end": {}, "segments": []}


def test_pauses_are_written_and_read_back_and_old_manifests_have_none(tmp_path, lab):
    key = Ed25519PrivateKey.generate()
    recipient = str(identity(lab).to_public())
    old = open_manifest(seal(BODY, key, recipient), identity(lab))
    assert old.pauses == [] and "pauses" not in old.body
    write_manifest(tmp_path, recording_id="cd" * 16, teacher_id="t-evans", device_id="unit-1",
                   recipient=recipient, start={}, end={}, complete=True, ended_by="stop",
                   device_key=key, pauses=[(1.5, 3.0), (4.0, 9.25)])
    new = open_manifest((tmp_path / MANIFEST_FILE).read_bytes(), identity(lab))
    assert new.pauses == [(1.5, 3.0), (4.0, 9.25)]


@pytest.mark.parametrize("pauses", [[[3.0, 1.0]], [[1.0, 2.0], [1.5, 3.0]], [[1.0]],
                                    [[-1.0, 2.0]], [["1", 2]], [[True, 2]], {"1": 2}, [1.0]])
def test_a_manifest_with_malformed_pauses_is_refused(lab, pauses):
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ManifestRejected, match="pauses"):
        open_manifest(seal(BODY | {"pauses": pauses}, key, str(identity(lab).to_public())),
                      identity(lab))
