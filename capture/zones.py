"""Privacy zones: parts of the picture filled solid in every frame before any encoder sees it.

    zones = (Zone(rect=(0.0, 0.6, 0.25, 1.0)), Zone(polygon=((0.7, 0.1), (0.95, 0.1), (0.9, 0.5))))
    fill_zones(frame, zones)                        # a PyAV yuv420p VideoFrame, in place
    camera.pre_callback = zones_pre_callback(ZoneMask.of(zones, 1280, 720))   # on the Pi

Zones are given relative to the frame (0..1 on each axis, origin top left), so they stay where IT
put them when the resolution changes. Each is rasterised once per resolution (Pillow's polygon
fill) into a `ZoneMask`, which covers every pixel the zone touches: a pixel partly inside is
filled. Filling it is a few slice assignments per zone, a small part of a frame's encode time
(bench/zones_cost.py).

Edges. In the frame handed to the encoder the luma plane is filled exactly on the mask, and each
chroma plane on every chroma sample whose 2x2 luma block touches the mask: the colour of the fill
reaches at most one luma pixel beyond the zone (one chroma sample), never less than the zone.
After lossy H.264 encoding, pixels inside the zone within one macroblock (16 luma pixels) of its
edge may differ from the fill by the codec's quantisation error, as the macroblocks there carry
both the fill and the picture beside it; deeper inside, the decoded picture is the fill (within
`DECODED_TOLERANCE`). Nothing of the picture inside the zone reaches the encoder at all.

Both encoders get the same fill at the same edges: for libx264 the chain fills each PyAV frame
(`fill_zones`); for picamera2's H264Encoder (the Pi camera, and the simulator's twin of it)
`zones_pre_callback` fills the request's YUV420 buffer, whose rows may be padded to a stride, in
place before picamera2 hands the request to any encoder (tests/test_zones_encoders.py decodes
every frame of both).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from PIL import Image, ImageDraw

from capture.zone_shapes import Point, Zone, polygon_problem, rect_problem  # noqa: F401 (re-exported)

# Black in limited-range BT.601/709 YUV: what the zone shows.
FILL_Y = 16
FILL_C = 128
# A decoded pixel deeper than one macroblock inside a zone is the fill within this (x264's
# rounding of a flat block).
DECODED_TOLERANCE = 3
MACROBLOCK = 16
# Polygons are rasterised at this many times the frame's size (see _rasterise).
SUPERSAMPLE = 4

@dataclass(frozen=True)
class _Part:
    """A zone's bounding box in one plane, and what of it to fill (None: all of it)."""

    rows: slice
    cols: slice
    where: np.ndarray | None


@dataclass(frozen=True)
class ZoneMask:
    """The zones rasterised for one frame size: what `fill_yuv420` fills."""

    width: int
    height: int
    luma: np.ndarray     # bool (height, width)
    chroma: np.ndarray   # bool (ceil(height/2), ceil(width/2))
    _luma_parts: tuple[_Part, ...]
    _chroma_parts: tuple[_Part, ...]

    @staticmethod
    def of(zones: tuple[Zone, ...], width: int, height: int) -> ZoneMask:
        """The mask of `zones` at `width` x `height` (cached per zones and size)."""
        return _mask(zones, width, height)

    def fill_planes(self, y: np.ndarray, u: np.ndarray, v: np.ndarray) -> None:
        """Fill the zones in three planes (views of the frame's memory), in place."""
        for part in self._luma_parts:
            _fill(y, part, FILL_Y)
        for part in self._chroma_parts:
            _fill(u, part, FILL_C)
            _fill(v, part, FILL_C)


def fill_zones(frame: av.VideoFrame, zones: tuple[Zone, ...]) -> None:
    """Fill `zones` in a yuv420p `frame`, in place (nothing to do without zones)."""
    if zones:
        fill_yuv420(frame, ZoneMask.of(zones, frame.width, frame.height))


def fill_yuv420(frame: av.VideoFrame, mask: ZoneMask) -> None:
    """Fill `mask` in a PyAV yuv420p `frame`, in place (its planes may be padded)."""
    if frame.format.name != "yuv420p" or (frame.width, frame.height) != (mask.width, mask.height):
        raise ValueError(f"zones for {mask.width}x{mask.height} yuv420p, not "
                         f"{frame.width}x{frame.height} {frame.format.name}")
    planes = [np.frombuffer(memoryview(p), np.uint8).reshape(p.height, p.line_size)[:, :p.width]
              for p in frame.planes]
    mask.fill_planes(*planes)


def fill_yuv420_buffer(buffer: np.ndarray, mask: ZoneMask) -> None:
    """Fill `mask` in place in picamera2's YUV420 buffer: a (height * 3/2, stride) uint8 array
    holding the Y plane (stride per row), then U and V (stride/2 per row, packed two rows to an
    array row), as `MappedArray(request, "main").array` gives it."""
    w, h = mask.width, mask.height
    rows, stride = buffer.shape
    if rows != h * 3 // 2 or stride < w or h % 2:
        raise ValueError(f"a YUV420 buffer for {w}x{h} is ({h * 3 // 2}, >= {w}), not "
                         f"{buffer.shape}")
    flat = buffer.reshape(-1)  # a view: the buffer is one contiguous block
    cs, ch, cw = stride // 2, h // 2, (w + 1) // 2
    y = flat[:h * stride].reshape(h, stride)[:, :w]
    u = flat[h * stride:h * stride + ch * cs].reshape(ch, cs)[:, :cw]
    v = flat[h * stride + ch * cs:h * stride + 2 * ch * cs].reshape(ch, cs)[:, :cw]
    mask.fill_planes(y, u, v)


def zones_pre_callback(mask: ZoneMask, mapped_array: Callable[[Any, str], Any] | None = None
                       ) -> Callable[[Any], None]:
    """A picamera2 `pre_callback` that fills `mask` in the "main" stream (YUV420, of the mask's
    size) of each request before the hardware encoder or anything else sees it:

        picam2.pre_callback = zones_pre_callback(ZoneMask.of(zones, *main_size))

    `mapped_array` maps a request's stream as picamera2's `MappedArray` does (the default; the
    simulator's camera gives its own twin)."""
    if mapped_array is None:
        from picamera2 import MappedArray  # only on a Pi
        mapped_array = MappedArray
    mapping = mapped_array

    def fill(request: Any) -> None:
        with mapping(request, "main") as mapped:
            fill_yuv420_buffer(mapped.array, mask)

    return fill


@functools.lru_cache(maxsize=8)
def _mask(zones: tuple[Zone, ...], width: int, height: int) -> ZoneMask:
    luma = np.zeros((height, width), dtype=bool)
    luma_parts = []
    for zone in zones:
        one = _rasterise(zone, width, height)
        luma |= one
        luma_parts.append(_part(one))
    # A chroma sample covers a 2x2 luma block: it is filled if any of the block is.
    ch, cw = (height + 1) // 2, (width + 1) // 2
    padded = np.zeros((ch * 2, cw * 2), dtype=bool)
    chroma_parts = []
    for part in luma_parts:
        padded[:] = False
        padded[part.rows, part.cols] = True if part.where is None else part.where
        chroma_parts.append(_part(_any_in_blocks(padded, 2)))
    padded[:height, :width] = luma
    chroma = _any_in_blocks(padded, 2)
    for array in (luma, chroma):
        array.flags.writeable = False
    return ZoneMask(width, height, luma, chroma, tuple(luma_parts), tuple(chroma_parts))


def _rasterise(zone: Zone, width: int, height: int) -> np.ndarray:
    """Every pixel `zone` touches, at this size."""
    if zone.rect is not None:
        # Pixel i spans [i, i + 1): it is touched if it overlaps [x0, x1) scaled to pixels.
        x0, y0, x1, y1 = zone.rect
        r0, c0 = int(np.floor(y0 * height)), int(np.floor(x0 * width))
        r1, c1 = max(int(np.ceil(y1 * height)), r0 + 1), max(int(np.ceil(x1 * width)), c0 + 1)
        one = np.zeros((height, width), dtype=bool)
        one[r0:r1, c0:c1] = True
        return one
    # Pillow puts pixel centres on integer coordinates and rounds the vertices to them: drawn
    # at SUPERSAMPLE times the size, with the outline (the subpixels the edges pass through),
    # a pixel is in if any of its subpixels is, so the mask covers the polygon's whole area.
    s = SUPERSAMPLE
    image = Image.new("1", (width * s, height * s), 0)
    points = [(x * width * s - 0.5, y * height * s - 0.5) for x, y in zone.points()]
    ImageDraw.Draw(image).polygon(points, fill=1, outline=1)
    return _any_in_blocks(np.array(image, dtype=bool), s)


def _any_in_blocks(mask: np.ndarray, n: int) -> np.ndarray:
    """Whether any of each n x n block of `mask` (whose sides are multiples of n) is set."""
    h, w = mask.shape
    return np.asarray(mask.reshape(h // n, n, w // n, n).any(axis=(1, 3)))


def _part(one: np.ndarray) -> _Part:
    rows = np.flatnonzero(one.any(axis=1))
    cols = np.flatnonzero(one.any(axis=0))
    if rows.size == 0:
        return _Part(slice(0, 0), slice(0, 0), None)
    r, c = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    box = one[r, c]
    return _Part(r, c, None if box.all() else box.copy())


def _fill(plane: np.ndarray, part: _Part, value: int) -> None:
    if part.where is None:
        plane[part.rows, part.cols] = value
    else:
        np.copyto(plane[part.rows, part.cols], np.uint8(value), where=part.where)
