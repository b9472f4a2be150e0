"""What privacy zones cost per 720p frame, as a ratio to encoding that frame, in one run.

    python bench/zones_cost.py [--frames 250] [--zones 4] [--quick]

Source: 25 distinct 1280x720 frames drawn by the simulator's `draw_frame`, converted to yuv420p
as the capture chain does (`capture.pipeline.picture`), looped to `--frames`.

  zones    `capture.zones.fill_zones` on each frame with `--zones` zones (half rectangles, half
           polygons, together about a fifth of the picture): CPU time per frame (the mask is
           rasterised once, before timing, as in a recording).
  encode   libx264 with the settings of `capture.pipeline.Encoders` (the configured defaults:
           veryfast, 2500 kbit/s, zerolatency) on the same frames, zones filled: CPU time per
           frame (the peer: what the frame costs anyway).

RATIO = zones / encode; the aim is at most 0.05. CPU time (process_time) rather than wall time,
as x264 runs threads and the machine is shared; the load average is printed before and after.
"""
from __future__ import annotations

import argparse
import os
import time

from capture.pipeline import CaptureSettings, Encoders, picture
from capture.zones import Zone, ZoneMask, fill_zones
from hwsim.capture import background, draw_frame

WIDTH, HEIGHT, FPS = 1280, 720, 25
ZONES = (Zone(rect=(0.0, 0.6, 0.2, 1.0)),
         Zone(polygon=((0.7, 0.1), (0.95, 0.1), (0.9, 0.45), (0.75, 0.4))),
         Zone(rect=(0.4, 0.85, 0.6, 1.0)),
         Zone(polygon=((0.25, 0.15), (0.4, 0.2), (0.3, 0.45))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--zones", type=int, default=4, choices=range(1, len(ZONES) + 1))
    parser.add_argument("--quick", action="store_true", help="50 frames")
    args = parser.parse_args()
    count = 50 if args.quick else args.frames
    zones = ZONES[:args.zones]
    print(f"load average before: {os.getloadavg()}")
    ground = background(WIDTH, HEIGHT)
    images = [draw_frame(ground, n, FPS) for n in range(FPS)]
    share = ZoneMask.of(zones, WIDTH, HEIGHT).luma.mean()

    frames = [picture(images[n % FPS], n) for n in range(count)]
    ZoneMask.of(zones, WIDTH, HEIGHT)  # rasterised once per recording, not per frame
    t0 = time.process_time()
    for frame in frames:
        fill_zones(frame, zones)
    zones_s = (time.process_time() - t0) / count

    encoders = Encoders(CaptureSettings(width=WIDTH, height=HEIGHT, fps=FPS))
    t0 = time.process_time()
    for frame in frames:
        encoders.video.encode(frame)
    encoders.video.encode(None)
    encode_s = (time.process_time() - t0) / count

    print(f"{count} frames {WIDTH}x{HEIGHT}, {len(zones)} zones covering "
          f"{100 * share:.0f}% of the picture")
    print(f"zones:  {1000 * zones_s:.3f} ms CPU per frame")
    print(f"encode: {1000 * encode_s:.3f} ms CPU per frame (libx264 veryfast, the peer)")
    print(f"RATIO zones/encode = {zones_s / encode_s:.4f}  (aim <= 0.05)")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
