"""Privacy zones in the raw frame, before any encoder: the configuration refuses a bad zone naming
its key; the fill covers every pixel of each zone exactly (luma) or by whole chroma samples, on a
PyAV frame and on picamera2's YUV420 buffer alike, and touches nothing else."""
from __future__ import annotations

import sys
import types

import av
import numpy as np
import pytest

from appliance.config import ConfigError, parse
from appliance.hardware import capture_settings
from capture.zones import (FILL_C, FILL_Y, Zone, ZoneMask, fill_yuv420, fill_yuv420_buffer,
                           fill_zones, zones_pre_callback)

ZONES = (Zone(rect=(0.05, 0.55, 0.33, 0.95)),
         Zone(polygon=((0.6, 0.2), (0.95, 0.3), (0.7, 0.8))))


def centres_inside(zone: Zone, width: int, height: int) -> np.ndarray:
    """The pixels whose centres lie inside `zone` (even-odd rule), computed here independently
    of the rasteriser under test."""
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    px, py = np.meshgrid(xs, ys)
    inside = np.zeros((height, width), dtype=bool)
    pts = zone.points()
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1], strict=True):
        crosses = (y1 > py) != (y2 > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (px < x_at)
    return inside


def chroma_of(luma: np.ndarray) -> np.ndarray:
    """Chroma samples whose 2x2 luma block has any pixel of `luma`."""
    h, w = luma.shape
    padded = np.zeros(((h + 1) // 2 * 2, (w + 1) // 2 * 2), dtype=bool)
    padded[:h, :w] = luma
    return padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2).any(axis=(1, 3))


def _random_frame(width: int, height: int, seed: int = 1) -> av.VideoFrame:
    rng = np.random.default_rng(seed)
    image = rng.integers(60, 200, (height, width, 3), dtype=np.uint8)
    return av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")


def _planes(frame: av.VideoFrame) -> list[np.ndarray]:
    return [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, :p.width].copy()
            for p in frame.planes]


@pytest.mark.parametrize("width, height", [(320, 240), (642, 362)])  # 642: padded planes
def test_fill_covers_every_pixel_of_each_zone_and_nothing_beyond_one_chroma_sample(width,
                                                                                  height):
    frame = _random_frame(width, height)
    before = _planes(frame)
    fill_zones(frame, ZONES)
    y, u, v = _planes(frame)
    mask = ZoneMask.of(ZONES, width, height)
    for zone in ZONES:
        inside = centres_inside(zone, width, height)
        assert inside.sum() > 100
        assert (y[inside] == FILL_Y).all()
        assert (u[chroma_of(inside)] == FILL_C).all() and (v[chroma_of(inside)] == FILL_C).all()
    everything = centres_inside(ZONES[0], width, height) | centres_inside(ZONES[1], width, height)
    # The mask takes in the pixels an edge passes through, and no pixel farther out.
    grown = np.zeros_like(everything)
    grown[1:-1, 1:-1] = everything[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            grown |= np.roll(np.roll(everything, dy, axis=0), dx, axis=1)
    assert (mask.luma <= grown).all()
    # Outside the mask, the frame is as the camera gave it.
    assert (y[~mask.luma] == before[0][~mask.luma]).all()
    assert (y[mask.luma] == FILL_Y).all()
    assert (u[mask.chroma] == FILL_C).all() and (v[mask.chroma] == FILL_C).all()
    assert (u[~mask.chroma] == before[1][~mask.chroma]).all()
    assert (v[~mask.chroma] == before[2][~mask.chroma]).all()
    assert (mask.chroma == chroma_of(mask.luma)).all()


def test_a_rect_covers_exactly_the_pixels_it_touches():
    mask = ZoneMask.of((Zone(rect=(0.1, 0.25, 0.5, 0.5)),), 100, 40)
    expected = np.zeros((40, 100), dtype=bool)
    expected[10:20, 10:50] = True
    assert (mask.luma == expected).all()
    # A rect edge through the middle of a pixel takes the whole pixel in.
    mask = ZoneMask.of((Zone(rect=(0.105, 0.0, 0.205, 0.5)),), 100, 40)
    assert np.flatnonzero(mask.luma[0]).tolist() == list(range(10, 21))


def test_picamera2_buffer_with_padded_stride_fills_like_the_pyav_frame():
    width, height, stride = 320, 240, 384
    frame = _random_frame(width, height, seed=7)
    y, u, v = _planes(frame)
    # picamera2's YUV420 layout: Y rows of `stride`, then U and V rows of stride/2, packed two
    # to an array row; the padding holds whatever the ISP left there.
    buffer = np.full((height * 3 // 2, stride), 77, dtype=np.uint8)
    flat = buffer.reshape(-1)
    cs = stride // 2
    flat[:height * stride].reshape(height, stride)[:, :width] = y
    base = height * stride
    flat[base:base + height // 2 * cs].reshape(height // 2, cs)[:, :width // 2] = u
    base += height // 2 * cs
    flat[base:base + height // 2 * cs].reshape(height // 2, cs)[:, :width // 2] = v
    original = buffer.copy()

    fill_zones(frame, ZONES)
    fill_yuv420_buffer(buffer, ZoneMask.of(ZONES, width, height))

    fy, fu, fv = _planes(frame)
    got_y = flat[:height * stride].reshape(height, stride)
    assert (got_y[:, :width] == fy).all()
    base = height * stride
    got_u = flat[base:base + height // 2 * cs].reshape(height // 2, cs)
    got_v = flat[base + height // 2 * cs:].reshape(height // 2, cs)
    assert (got_u[:, :width // 2] == fu).all() and (got_v[:, :width // 2] == fv).all()
    # The padding is left alone.
    assert (got_y[:, width:] == 77).all()
    assert (got_u[:, width // 2:] == 77).all() and (got_v[:, width // 2:] == 77).all()
    assert not (buffer == original).all()


def test_pre_callback_fills_the_main_stream_of_each_request(monkeypatch):
    width, height = 160, 120
    buffers: dict[str, np.ndarray] = {}

    class MappedArray:  # picamera2's: a context manager whose .array is the stream's buffer
        def __init__(self, request, stream):
            self.array = buffers[stream]

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(MappedArray=MappedArray))
    buffers["main"] = np.full((height * 3 // 2, width), 200, dtype=np.uint8)
    buffers["lores"] = np.full((height * 3 // 2, width), 200, dtype=np.uint8)
    mask = ZoneMask.of(ZONES, width, height)
    zones_pre_callback(mask)(object())
    y = buffers["main"][:height]
    assert (y[mask.luma] == FILL_Y).all() and (y[~mask.luma] == 200).all()
    assert (buffers["lores"] == 200).all()


def test_a_frame_of_another_size_is_refused_not_masked_in_the_wrong_place():
    frame = _random_frame(320, 240)
    with pytest.raises(ValueError, match="320x240"):
        fill_yuv420(frame, ZoneMask.of(ZONES, 640, 480))


def test_zones_from_the_configuration_reach_the_capture_chain(tmp_path):
    config = parse({"device": {"id": "classcam-unit", "roster_dir": str(tmp_path)},
                    "privacy": {"zones": [{"rect": [0, 0.5, 0.25, 1]},
                                          {"polygon": [[0.6, 0.2], [0.95, 0.3], [0.7, 0.8]]}]}})
    assert capture_settings(config).zones == (
        Zone(rect=(0.0, 0.5, 0.25, 1.0)), Zone(polygon=((0.6, 0.2), (0.95, 0.3), (0.7, 0.8))))


@pytest.mark.parametrize("zones, message", [
    ([{"rect": [0.5, 0.1, 0.4, 0.3]}], "privacy.zones.0.rect: empty"),
    ([{"rect": [0, 0, 1, 1]}, {"rect": [0.1, 0.1, 1.2, 0.3]}],
     "privacy.zones.1.rect: outside the frame"),
    ([{"rect": [0.1, 0.1, 0.3]}], "privacy.zones.0.rect: a rect is [x0, y0, x1, y1]"),
    ([{"rect": [0, 0, 0.1, 0.1]}, {"polygon": [[0.1, 0.1], [0.5, 0.1]]}],
     "privacy.zones.1.polygon: a polygon needs at least 3 points"),
    ([{"polygon": [[0.1, 0.1], [0.5, 0.5], [0.9, 0.9]]}], "privacy.zones.0.polygon: degenerate"),
    ([{"polygon": [[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]}],
     "privacy.zones.0.polygon: self-intersecting"),
    ([{"polygon": [[0.1, 0.1], [0.5, 0.1], [0.3, 0.1], [0.3, 0.5]]}],
     "privacy.zones.0.polygon: self-intersecting"),
    ([{"polygon": [[0.1, 0.1], [0.5, -0.1], [0.3, 0.5]]}],
     "privacy.zones.0.polygon: outside the frame"),
    ([{"polygon": [[0.1, 0.1, 0.2], [0.5, 0.1], [0.3, 0.5]]}],
     "privacy.zones.0.polygon: each point is [x, y]"),
    ([{"rect": [0, 0, 0.5, 0.5], "polygon": [[0.1, 0.1], [0.5, 0.1], [0.3, 0.5]]}],
     "privacy.zones.0: a zone is either a rect or a polygon"),
    ([{}], "privacy.zones.0: a zone is either a rect or a polygon"),
    ([{"circle": [0.5, 0.5, 0.1]}], "privacy.zones.0.circle: unknown key"),
])
def test_a_bad_zone_is_a_config_error_naming_its_key(tmp_path, zones, message):
    with pytest.raises(ConfigError) as e:
        parse({"device": {"id": "classcam-unit", "roster_dir": str(tmp_path)},
               "privacy": {"zones": zones}}, source="classcam.toml")
    assert str(e.value).startswith(f"classcam.toml: {message}"), str(e.value)
