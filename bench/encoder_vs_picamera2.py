"""CPU per 720p frame of our software capture chain against picamera2's own software path, on the
same frames in one run; and the idle daemon's memory.

    python bench/encoder_vs_picamera2.py [--frames 500] [--reps 3] [--quick]

Source: K distinct 1280x720 YUV 4:2:0 frames drawn by the simulator's `draw_frame`, pre-rendered
and looped, each handed over as `av.VideoFrame.from_numpy_buffer` (no copy), as picamera2 does
with a request's buffer.

  peer   picamera2's `LibavH264Encoder` (its source, 0.3.38: what a Pi 5 uses for `H264Encoder`,
         and what any Pi uses without the hardware encoder): libx264 through PyAV, preset
         "ultrafast", tune "zerolatency", deblock 1, thread_count 0 with frame threads, time base
         1 us, gop = iperiod, then `FileOutput` writing each packet's bytes to a file. Repeated
         here with PyAV, setting for setting (picamera2 itself needs libcamera to run).
  peer+a the same with picamera2's own sound (`Encoder.audio = True`: its audio thread encodes
         the microphone with PyAV's "aac"), at our bit rate (128 kb/s: `audio_output`'s
         `bit_rate`; FFmpeg's default for mono, 69 kb/s, distorts a pure tone), on the same silent
         samples ours gets: what picamera2 costs when it records sound, as the unit always does.
         This is the like-for-like peer, and its RATIO the one the aim is read against.
  ours   the real `capture.pipeline.Recorder` with a camera giving those frames as fast as they
         are taken and a silent microphone: libx264 with the same preset and keyframe period,
         AAC, MPEG-TS segments, age encryption on a thread, sealed segments on disk.

CPU is user+sys of this process (getrusage: every thread, x264's included) over the run, divided
by the frames; the RATIO is ours / peer (aim: <= 1.1). The best of `--reps` alternated runs of
each is compared, and the median of the per-pair ratios is printed beside it.

CPU time on a shared machine swings by 20 % from run to run, so the same work is also counted in
instructions, which load does not change: each side runs alone in a child process under
Valgrind (`cachegrind --cache-sim=no`, every thread counted), once for `--frames` frames and
once for `--frames + 250` (one more 10 s segment); the difference over 250 is its instructions
per frame, start-up and imports cancelled out. Instructions weigh a Python call as much as a
SIMD instruction of x264's, so this ratio is, if anything, harder on ours (which has the more
Python per frame). Skipped with `--no-instructions` or when Valgrind is not installed.

Then the real daemon (`classcam run --hw sim`) is started and its RSS read while idle (aim:
<= 60 MiB), with the pad in its own process as on a unit, without and with an upload server.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import av  # noqa: E402
import numpy as np  # noqa: E402
import pyrage  # noqa: E402

from capture.pipeline import CaptureSettings, Recorder  # noqa: E402
from hwsim.capture import background, draw_frame  # noqa: E402
from procstat import loadavg, proc_status  # noqa: E402
from sources import LoopCamera, SourceEnded  # noqa: E402

OUT = ROOT / "bench" / "out" / "encoder_vs_picamera2"
WIDTH, HEIGHT, FPS = 1280, 720, 25
SETTINGS = CaptureSettings(width=WIDTH, height=HEIGHT, fps=FPS, min_free_mb=1,
                           x264_preset="ultrafast", segment_seconds=10)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500, help="frames per run")
    parser.add_argument("--distinct", type=int, default=50, help="distinct pre-rendered frames")
    parser.add_argument("--reps", type=int, default=7, help="rounds of the three sides, in turning order")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-instructions", action="store_true",
                        help="skip the instruction counts under Valgrind")
    parser.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:  # one side alone, for Valgrind: frames from the parent's file
        frames = list(np.load(OUT / "frames.npy"))
        SIDES[args.child](frames, args.frames)
        return 0
    if args.quick:
        args.frames, args.reps = 150, 1
    print(f"load average before {loadavg():.2f}")
    ground = background(WIDTH, HEIGHT)
    frames = [draw_frame(ground, n, FPS) for n in range(args.distinct)]
    OUT.mkdir(parents=True, exist_ok=True)
    peers, sounding, ours = [], [], []
    runs = {"peer": peers, "peer+a": sounding, "ours": ours}
    for rep in range(args.reps):  # the order turns each round: no side always runs first
        order = list(SIDES)[rep % 3:] + list(SIDES)[:rep % 3]
        for side in order:
            runs[side].append(SIDES[side](frames, args.frames))
    peer, peer_a, mine = min(peers), min(sounding), min(ours)
    print(f"CPU per {WIDTH}x{HEIGHT} frame, {args.frames} frames, best of {args.reps}:")
    print(f"  peer: picamera2 LibavH264Encoder + FileOutput   {1e3 * peer:6.2f} ms "
          f"(runs: {', '.join(f'{1e3 * p:.2f}' for p in peers)})")
    print(f"  peer+a: the same with its AAC (audio = True)    {1e3 * peer_a:6.2f} ms "
          f"(runs: {', '.join(f'{1e3 * p:.2f}' for p in sounding)})")
    print(f"  ours: Recorder, x264 + AAC + TS + age, sealed   {1e3 * mine:6.2f} ms "
          f"(runs: {', '.join(f'{1e3 * p:.2f}' for p in ours)})")
    print(f"  RATIO ours/peer+a {mine / peer_a:.2f}  (aim <= 1.1; both record sound)")
    print(f"  ratio ours/peer {mine / peer:.2f}  (for scale: this peer records no sound)")
    print(f"  median of the {args.reps} pairs' ratios: ours/peer "
          f"{statistics.median(o / p for o, p in zip(ours, peers, strict=True)):.2f}, ours/peer+a "
          f"{statistics.median(o / p for o, p in zip(ours, sounding, strict=True)):.2f}")
    if not args.no_instructions:
        instructions(frames, args.frames)
    shutil.rmtree(OUT, ignore_errors=True)
    print("idle daemon RSS (classcam run --hw sim, the pad in its own process, 2 s after start; "
          "aim <= 60 MiB):")
    for unit, how in IDLE_UNITS.items():
        print(f"  {idle_daemon_rss_mib(**how):5.1f} MiB  {unit}")
    print(f"load average after {loadavg():.2f}")
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def picamera2_software_path(frames: list[np.ndarray], total: int, sound: bool = False) -> float:
    """CPU seconds per frame of LibavH264Encoder's `_start`/`_encode`/`_stop` with FileOutput;
    with `sound`, also its audio thread's AAC encoding of the same silent samples as ours."""
    container = av.open(os.devnull, "w", format="null")
    stream = container.add_stream("h264", rate=FPS)
    stream.codec_context.thread_count = 0
    stream.codec_context.thread_type = av.codec.context.ThreadType.FRAME
    stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    stream.codec_context.bit_rate = SETTINGS.video_bitrate_kbps * 1000
    stream.codec_context.gop_size = FPS  # iperiod, as ours
    stream.codec_context.options["preset"] = "ultrafast"
    stream.codec_context.options["deblock"] = "1"
    stream.codec_context.time_base = Fraction(1, 1_000_000)
    stream.codec_context.options["tune"] = "zerolatency"
    aac = container.add_stream("aac", rate=SETTINGS.audio_rate) if sound else None
    if aac is not None:  # as `audio_output = {"codec_name": "aac", "bit_rate": ...}` sets it
        aac.bit_rate = SETTINGS.audio_bitrate_kbps * 1000
    silence = np.zeros((1, SETTINGS.audio_rate // FPS), np.float32)
    cpu0 = _cpu()
    with open(OUT / "picamera2.h264", "wb") as out:  # FileOutput
        for n in range(total):
            frame = av.VideoFrame.from_numpy_buffer(frames[n % len(frames)], format="yuv420p",
                                                    width=WIDTH)
            frame.pts = n * 1_000_000 // FPS
            for packet in stream.encode(frame):
                out.write(bytes(packet))
            if aac is not None:  # the audio thread: each input frame encoded, sent on
                samples = av.AudioFrame.from_ndarray(silence, format="flt", layout="mono")
                samples.sample_rate = SETTINGS.audio_rate
                for packet in aac.encode(samples):
                    out.write(bytes(packet))
        for packet in stream.encode():
            out.write(bytes(packet))
        if aac is not None:
            for packet in aac.encode():
                out.write(bytes(packet))
    container.close()
    cpu = _cpu() - cpu0
    (OUT / "picamera2.h264").unlink()
    return cpu / total


class SilentMicrophone:
    name = "microphone"

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, samples: int, timeout: float) -> np.ndarray:
        return np.zeros(samples, np.float32)


def our_chain(frames: list[np.ndarray], total: int) -> float:
    """CPU seconds per frame of the real Recorder, to sealed segments."""
    directory = OUT / "ours"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    camera = LoopCamera(frames, total, FPS)
    recorder = Recorder(camera, SilentMicrophone(), directory, recipient, SETTINGS,
                        free_bytes=lambda p: 1 << 40)
    cpu0 = _cpu()
    recorder.start()
    camera.ended.wait()
    recorder.stop()
    cpu = _cpu() - cpu0
    assert isinstance(recorder.error, SourceEnded), recorder.error
    assert recorder.frames == total
    shutil.rmtree(directory)
    return cpu / total


SEGMENT_FRAMES = 250  # one 10 s segment at 25 fps


def instructions(frames: list[np.ndarray], total: int) -> None:
    """Print each side's instructions per frame, counted by Valgrind, and the ratios."""
    if shutil.which("valgrind") is None:
        print("instructions: valgrind is not installed; skipped")
        return
    np.save(OUT / "frames.npy", np.stack(frames))
    per_frame = {}
    for side in SIDES:
        short, long = (_instructions(side, n) for n in (total, total + SEGMENT_FRAMES))
        per_frame[side] = (long - short) / SEGMENT_FRAMES
    (OUT / "frames.npy").unlink()
    print(f"instructions per {WIDTH}x{HEIGHT} frame (Valgrind, every thread; "
          f"{total + SEGMENT_FRAMES} less {total} frames):")
    for side, count in per_frame.items():
        print(f"  {side:7s} {count / 1e6:7.2f} M")
    print(f"  RATIO ours/peer+a {per_frame['ours'] / per_frame['peer+a']:.3f}  (aim <= 1.1); "
          f"ratio ours/peer {per_frame['ours'] / per_frame['peer']:.3f}  (no sound)")


def _instructions(side: str, total: int) -> int:
    """Instructions of one child process running `side` for `total` frames."""
    out = OUT / f"cachegrind.{side}.{total}"
    done = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", f"--cachegrind-out-file={out}",
         sys.executable, __file__, "--child", side, "--frames", str(total)],
        capture_output=True, text=True, check=True)
    out.unlink(missing_ok=True)
    refs = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if refs is None:
        raise RuntimeError(f"valgrind printed no instruction count:\n{done.stderr[-2000:]}")
    return int(refs.group(1).replace(",", ""))


IDLE_UNITS = {
    "no [upload]": {},
    "uploading to the reference server": {"upload": True},
}


def idle_daemon_rss_mib(upload: bool = False, sim: dict | None = None) -> float:
    """VmRSS of the real daemon 2 s after it started, as it runs on a unit: the pad in its own
    process (classcam-pinpad; the simulator would otherwise run it inside the daemon); with
    `upload`, sending to the reference account server over mutual TLS; `sim` adds settings."""
    from hwsim.lab import Lab
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    try:
        lab = Lab.create(root, teachers={"t-evans": "432187"},
                         sim={"pad_keystore": None, "security_keys": None, **(sim or {})})
        with contextlib.ExitStack() as stack:
            stack.enter_context(_malloc_as_the_unit_file_sets_it())
            if upload:
                stack.enter_context(lab.account())
            unit = stack.enter_context(lab.daemon())
            time.sleep(2)
            return proc_status(unit.proc.pid)["VmRSS"] / 1024
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def _malloc_as_the_unit_file_sets_it():
    """The unit file's MALLOC_* environment (systemd/classcam.service), for the daemon started
    meanwhile (it inherits this process's environment)."""
    unit = (ROOT / "systemd" / "classcam.service").read_text().splitlines()
    settings = dict(line.removeprefix("Environment=").split("=", 1) for line in unit
                    if line.startswith("Environment=MALLOC_"))
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


SIDES = {"peer": picamera2_software_path,
         "peer+a": lambda frames, total: picamera2_software_path(frames, total, sound=True),
         "ours": our_chain}


if __name__ == "__main__":
    sys.exit(main())
