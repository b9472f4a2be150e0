"""A breakdown for `capture_vs_ffmpeg.py`: where our capture thread and our encryption sink spend
their time, stage by stage, next to what the same stage costs the peer.

    python bench/where_time_goes.py [--frames 500] [--mib 256] [--quick]

Capture thread, per 1280x720 frame: wrapping the camera's YUV 4:2:0 buffer in an AVFrame and
x264 encoding, as `capture.encoders.SoftwareH264` does them (no colour conversion: frames are
YUV 4:2:0 from the camera on).

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
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import av  # noqa: E402
import pyrage  # noqa: E402

from capture.encoders import VIDEO_TIME_BASE, SoftwareH264  # noqa: E402
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
    video = SoftwareH264(SETTINGS)
    totals = dict.fromkeys(("wrap the camera's yuv420p buffer (from_numpy_buffer, no copy)",
                            f"x264 encode (preset {SETTINGS.x264_preset}, zerolatency)"), 0.0)
    for i in range(n):
        t0 = time.perf_counter()
        frame = av.VideoFrame.from_numpy_buffer(frames[i % len(frames)], format="yuv420p")
        frame.pts, frame.time_base = i * 1_000_000 // FPS, VIDEO_TIME_BASE
        t1 = time.perf_counter()
        video.encode(frame)
        t2 = time.perf_counter()
        for name, seconds in zip(totals, (t1 - t0, t2 - t1), strict=True):
            totals[name] += seconds
    print(f"{f'capture thread, {n} frames of {WIDTH}x{HEIGHT}':70} ms/frame (wall)")
    for name, seconds in totals.items():
        print(f"  {'ours: ' + name:68} {1e3 * seconds / n:6.2f}")
    print("  (frames are yuv420p from the camera on: no colour conversion; bench/encoder_vs_"
          "picamera2.py compares the whole chain with picamera2's own path)")


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
