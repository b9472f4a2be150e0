"""Privacy zones in what is recorded: the real daemon records with zones in its configuration, and
every decoded frame shows each zone at the fill, at two resolutions (capture/zones.py documents
the edge: within one macroblock of it the codec may blur the fill into the picture beside it)."""
from __future__ import annotations

import io

import av
import cv2
import numpy as np
import pyrage
import pytest

from capture.zones import DECODED_TOLERANCE, FILL_C, FILL_Y, MACROBLOCK, Zone
from hwsim.capture import read_counter
from tests.media import identity, recording_dirs
from tests.test_zones_fill import centres_inside, chroma_of

ZONES = (Zone(rect=(0.03, 0.52, 0.31, 0.93)),
         Zone(polygon=((0.6, 0.22), (0.97, 0.33), (0.71, 0.85))))
# A pixel inside a zone but within a macroblock of its edge: how far the decoded value may be
# from the fill (measured here: at most 3 with x264 ultrafast, at both sizes; the picture beside
# the zones differs from the fill by 30 or more).
EDGE_TOLERANCE = 8


@pytest.mark.parametrize("width, height", [(320, 240), (640, 360)])
def test_every_decoded_frame_shows_each_zone_at_the_fill(lab, width, height):
    lab.settings["capture"] = {"width": width, "height": height}
    lab.settings["privacy"] = {"zones": [
        {"rect": list(ZONES[0].rect or ())},
        {"polygon": [list(p) for p in ZONES[1].polygon or ()]}]}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.5)["ok"]
    (rec,) = recording_dirs(lab)
    frames = list(_decoded_yuv(rec, identity(lab)))
    assert len(frames) >= 25

    kernel = np.ones((2 * MACROBLOCK + 1, 2 * MACROBLOCK + 1), np.uint8)
    checks = []
    for zone in ZONES:
        inside = centres_inside(zone, width, height)
        deep = cv2.erode(inside.astype(np.uint8), kernel).astype(bool)
        deep_chroma = cv2.erode(chroma_of(inside).astype(np.uint8), kernel[:MACROBLOCK + 1,
                                                                          :MACROBLOCK + 1])
        assert deep.sum() > 0.2 * inside.sum()
        checks.append((inside, deep, deep_chroma.astype(bool)))

    counters = []
    for image, y, u, v in frames:
        counters.append(read_counter(image))
        for inside, deep, deep_chroma in checks:
            distance = np.abs(y.astype(int) - FILL_Y)
            assert distance[deep].max() <= DECODED_TOLERANCE
            assert distance[inside].max() <= EDGE_TOLERANCE
            for plane in (u, v):
                assert np.abs(plane.astype(int) - FILL_C)[deep_chroma].max() <= DECODED_TOLERANCE
        # Beside the zones the picture is still there: the camera's background, not the fill.
        outside = ~(checks[0][0] | checks[1][0])
        assert np.median(y[outside]) > FILL_Y + 30
    assert counters == list(range(len(counters)))  # every frame, in order, readable


def _decoded_yuv(directory, ident: pyrage.x25519.Identity):
    """(BGR image, Y, U, V) of every video frame of the recording, in order."""
    for path in sorted(directory.glob("seg-*.ts.age")):
        plain = pyrage.decrypt(path.read_bytes(), [ident])
        with av.open(io.BytesIO(plain)) as container:
            for frame in container.decode(video=0):
                planes = frame.to_ndarray(format="yuv420p")
                h, w = frame.height, frame.width
                y = planes[:h]
                chroma = planes[h:].reshape(2, h // 2, w // 2)
                yield frame.to_ndarray(format="bgr24"), y, chroma[0], chroma[1]
