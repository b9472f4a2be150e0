"""A breakdown for `capture_vs_ffmpeg.py`: where our capture thread and our encryption sink spend
their time, stage by stage, next to what the same stage costs the peer.

    python bench/where_time_goes.py [--frames 500] [--mib 256] [--quick]

Capture thread, per 1280x720 frame: wrapping the camera's BGR array in an AVFrame
(`from_ndarray`, a copy), converting it to yuv420p (`reformat`, swscale of PyAV's bundled
FFmpeg), and x264 encoding, as `capture.pipeline.Encoders` does them; the same conversion in the
`ffmpeg` CLI (`-benchmark`, with and without a format=yuv420p filter); and OpenCV's BGR->I420
conversion as an alternative for comparison.

Encryption: pyrage's `encrypt_io` with no pipe (memory to a null writer, counting its read calls),
the os.pipe construction of `SealingSink` with its 64 KiB pipe and with a 1 MiB pipe, and SHA-256,
which the sink computes on the encryption thread.
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import av  # noqa: E402
import cv2  # noqa: E402
import pyrage  # noqa: E402

from capture.pipeline import Encoders  # noqa: E402
from capture_vs_ffmpeg import FPS, HEIGHT, SETTINGS, WIDTH, render_source  # noqa: E402

OUT = ROOT / "bench" / "out" / "where_time_goes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.frames, args.mib = 100, 32
    OUT.mkdir(parents=True, exist_ok=True)
    print(f"load average {os.getloadavg()[0]:.2f}")
    capture_stages(args.frames)
    print()
    crypto_stages(args.mib)
    OUT.rmdir()
    return 0


def capture_stages(n: int) -> None:
    frames, _ = render_source(50)
    encoders = Encoders(SETTINGS)
    totals = dict.fromkeys(("from_ndarray(bgr24) (copy into an AVFrame)",
                            "reformat bgr24 -> yuv420p (PyAV swscale)",
                            "x264 encode (preset veryfast, zerolatency)"), 0.0)
    for i in range(n):
        t0 = time.perf_counter()
        frame = av.VideoFrame.from_ndarray(frames[i % len(frames)], format="bgr24")
        t1 = time.perf_counter()
        yuv = frame.reformat(format="yuv420p")
        yuv.pts = i
        t2 = time.perf_counter()
        encoders.video.encode(yuv)
        t3 = time.perf_counter()
        for name, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            totals[name] += seconds
    print(f"{f'capture thread, {n} frames of {WIDTH}x{HEIGHT}':70} ms/frame (wall)")
    for name, seconds in totals.items():
        print(f"  {'ours: ' + name:68} {1e3 * seconds / n:6.2f}")
    print(f"  {'alternative: cv2.cvtColor BGR2YUV_I420 + from_ndarray(yuv420p)':68} "
          f"{_per_frame(frames, n, _cv2_i420):6.2f}")
    print(f"  {'peer: ffmpeg CLI conversion bgr24 -> yuv420p (its swscale)':68} "
          f"{_ffmpeg_convert_ms(frames):6.2f}")


def _cv2_i420(image):
    return av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420),
                                      format="yuv420p")


def _per_frame(frames, n: int, fn) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        fn(frames[i % len(frames)])
    return 1e3 * (time.perf_counter() - t0) / n


def _ffmpeg_convert_ms(frames) -> float:
    """rtime per frame of a format=yuv420p filter minus a pass-through, over 10 loops."""
    raw = OUT / "frames.bgr"
    raw.write_bytes(b"".join(f.tobytes() for f in frames))
    times = {}
    try:
        for fmt in ("bgr24", "yuv420p"):
            proc = subprocess.run(
                ["ffmpeg", "-hide_banner", "-nostdin", "-benchmark", "-stream_loop", "9",
                 "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{WIDTH}x{HEIGHT}", "-r", str(FPS),
                 "-i", str(raw), "-vf", f"format={fmt}", "-f", "null", "-"],
                capture_output=True, text=True, check=True)
            line = next(x for x in proc.stderr.splitlines() if "rtime=" in x)
            times[fmt] = float(line.split("rtime=")[1].rstrip("s"))
    finally:
        raw.unlink()
    return 1e3 * (times["yuv420p"] - times["bgr24"]) / (10 * len(frames))


def crypto_stages(mib: int) -> None:
    data = os.urandom(mib << 20)
    recipient = pyrage.x25519.Identity.generate().to_public()
    print(f"{f'encryption, {mib} MiB':70} MB/s")
    reader = _CountingReader(io.BytesIO(data))
    rate = _rate(data, lambda: pyrage.encrypt_io(reader, _Null(), [recipient]))
    sizes = {n for n, _ in reader.calls}
    print(f"  {'pyrage.encrypt_io, memory -> null writer (no pipe)':68} {rate:6.0f}"
          f"   ({len(reader.calls)} read calls of {sorted(sizes)} bytes)")
    for label, pipe_size in (("os.pipe (64 KiB) + encrypt_io thread, 32 KiB writes", None),
                             ("os.pipe (1 MiB)  + encrypt_io thread, 32 KiB writes", 1 << 20)):
        best = max(_rate(data, lambda size=pipe_size: _through_pipe(data, recipient, size))
                   for _ in range(3))
        print(f"  {label:68} {best:6.0f}")
    print(f"  {'hashlib.sha256 in 64 KiB updates (the sink hashes on that thread)':68} "
          f"{_rate(data, lambda: _sha256_chunks(data)):6.0f}")


class _CountingReader:
    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def read(self, n: int = -1) -> bytes:
        chunk = self.inner.read(n)
        self.calls.append((n, len(chunk)))
        return chunk


class _Null:
    def write(self, data) -> int:
        return len(data)

    def flush(self) -> None: ...


def _through_pipe(data: bytes, recipient, pipe_size: int | None) -> None:
    read_fd, write_fd = os.pipe()
    if pipe_size:
        fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, pipe_size)
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb", buffering=0)
    thread = threading.Thread(target=pyrage.encrypt_io, args=(reader, _Null(), [recipient]))
    thread.start()
    view = memoryview(data)
    for at in range(0, len(view), 32768):
        writer.write(view[at:at + 32768])
    writer.close()
    thread.join()
    reader.close()


def _sha256_chunks(data: bytes) -> None:
    h, view = hashlib.sha256(), memoryview(data)
    for at in range(0, len(view), 65552):
        h.update(view[at:at + 65552])


def _rate(data: bytes, fn) -> float:
    t0 = time.perf_counter()
    fn()
    return len(data) / (time.perf_counter() - t0) / 1e6


if __name__ == "__main__":
    sys.exit(main())
