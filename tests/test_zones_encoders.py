"""Privacy zones on both encoders: the real daemon records with zones in its configuration, once
with the chain's libx264 (a USB webcam's path) and once with the camera encoding itself as
picamera2's H264Encoder does, the zones filled by a picamera2-style `pre_callback` on the YUV420
buffer before that encoder (the Pi camera's path), at two resolutions (480 wide: rows padded to
picamera2's stride). Every decoded frame shows every pixel of each zone at the fill (within
the edge tolerance capture/zones.py documents), and the picture starts again within one
macroblock outside each zone's edge, where the configuration puts it."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from capture.zones import DECODED_TOLERANCE, FILL_C, FILL_Y, MACROBLOCK, Zone
from hwsim.capture import read_counter
from tests.media import identity, recording_dirs
from tests.test_zones_fill import centres_inside, chroma_of
from tests.test_zones_recording import EDGE_TOLERANCE, _decoded_yuv

ZONES = (Zone(rect=(0.03, 0.52, 0.31, 0.93)),
         Zone(polygon=((0.6, 0.22), (0.97, 0.33), (0.71, 0.85))))


def _grown(mask: np.ndarray, pixels: int) -> np.ndarray:
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@pytest.mark.parametrize("encoder", ["libx264", "picamera2"])
@pytest.mark.parametrize("width, height", [(320, 240), (480, 272)])
def test_each_zone_is_filled_in_every_decoded_frame_on_both_encoders(lab, encoder, width,
                                                                     height):
    lab.settings["sim"] = {"encoder": encoder, "realtime": False}
    lab.settings["capture"] = {"width": width, "height": height}
    lab.settings["privacy"] = {"zones": [
        {"rect": list(ZONES[0].rect or ())},
        {"polygon": [list(p) for p in ZONES[1].polygon or ()]}]}
    lab.write_config()
    with lab.daemon() as unit:
        assert unit.lesson("t-evans", seconds=1.0)["ok"]
    (rec,) = recording_dirs(lab)
    frames = list(_decoded_yuv(rec, identity(lab)))
    assert len(frames) >= 20

    kernel = np.ones((2 * MACROBLOCK + 1, 2 * MACROBLOCK + 1), np.uint8)
    everything = centres_inside(ZONES[0], width, height) | centres_inside(ZONES[1], width, height)
    checks = []
    for zone in ZONES:
        inside = centres_inside(zone, width, height)
        deep = cv2.erode(inside.astype(np.uint8), kernel).astype(bool)
        deep_chroma = cv2.erode(chroma_of(inside).astype(np.uint8),
                                kernel[:MACROBLOCK + 1, :MACROBLOCK + 1]).astype(bool)
        # The picture beside the zone: from one macroblock (plus the pixel an edge may take in)
        # outside its edge to two.
        beside = _grown(inside, 2 * MACROBLOCK) & ~_grown(everything, MACROBLOCK + 1)
        assert deep.sum() > 0.2 * inside.sum() and beside.sum() > 0.3 * inside.sum()
        checks.append((inside, deep, deep_chroma, beside))

    counters = []
    for image, y, u, v in frames:
        counters.append(read_counter(image))
        distance = np.abs(y.astype(int) - FILL_Y)
        for inside, deep, deep_chroma, beside in checks:
            assert distance[inside].max() <= EDGE_TOLERANCE   # every pixel of the zone
            assert distance[deep].max() <= DECODED_TOLERANCE
            for plane in (u, v):
                assert np.abs(plane.astype(int) - FILL_C)[deep_chroma].max() <= DECODED_TOLERANCE
            # The zone ends where the configuration says: the camera's picture (luma 60 and
            # up) is there a macroblock beyond its edge.
            assert distance[beside].min() > 30
    assert counters == list(range(len(counters)))  # every frame, in order, readable
