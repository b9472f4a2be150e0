"""Our capture chain against FFmpeg alone on the same synthetic source, and our encryption sink
against the `age` CLI on the same bytes, in one run.

    python bench/capture_vs_ffmpeg.py [--seconds 60] [--reps 3] [--random-mib 1024] [--quick]

Source: K distinct 1280x720 frames drawn by the simulator's `draw_frame` (pre-rendered, then
looped) and a 440 Hz tone (one second of it, 440 whole cycles, looped), `--seconds` of 25 fps.

  floor    the `ffmpeg` CLI reads raw yuv420p frames from a pipe and raw f32le mono samples from a
           FIFO (both written by feeder threads of this process), encodes libx264 and AAC with
           the settings of `capture.pipeline.Encoders` and cuts MPEG-TS segments with the segment
           muxer. Wall time, CPU (user+sys) and peak RSS of the ffmpeg process (os.wait4).
  ours     the real `capture.pipeline.Recorder` (Encoders -> Segmenter -> SealingSink) in a child
           process, fed the same frames and samples as fast as it takes them; sealed segments go
           to bench/out. Wall time, CPU and peak RSS of the recording phase (the child's own
           getrusage; the child's interpreter start-up and frame rendering are excluded).
  crypto   the `age` CLI (`age -r R -o out in`) against our sink's construction (os.pipe into
           pyrage.encrypt_io on a thread) on the concatenated floor segments and on random bytes.
  daemon   peak RSS (VmHWM) of the real daemon recording 1280x720@25 with realtime=false.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyrage  # noqa: E402

from capture.pipeline import CaptureSettings, Recorder  # noqa: E402
from capture.sealing import SealingSink  # noqa: E402
from hwsim.capture import TONE_HZ, TONE_LEVEL, background, draw_frame  # noqa: E402
from procstat import ProcWatcher, loadavg, proc_status  # noqa: E402
from sources import LoopCamera, SourceEnded  # noqa: E402

OUT = ROOT / "bench" / "out" / "capture_vs_ffmpeg"
WIDTH, HEIGHT, FPS, RATE = 1280, 720, 25, 48000
SETTINGS = CaptureSettings(width=WIDTH, height=HEIGHT, fps=FPS, min_free_mb=1)
CHUNK = 32768  # what PyAV's muxer hands a Python file object per write (av.open buffer_size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=60, help="seconds of video per run")
    parser.add_argument("--frames", type=int, default=50, help="distinct pre-rendered frames")
    parser.add_argument("--reps", type=int, default=3,
                        help="floor/ours pairs, alternated; the best of each is compared")
    parser.add_argument("--random-mib", type=int, default=1024,
                        help="size of the random file for the encryption comparison")
    parser.add_argument("--daemon-seconds", type=float, default=20.0)
    parser.add_argument("--skip-daemon", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="6 s of video, 64 MiB random, 5 s daemon: a smoke test")
    parser.add_argument("--child-ours", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ours:
        return _child_ours(json.loads(args.child_ours))
    if args.quick:
        args.seconds, args.random_mib, args.daemon_seconds, args.reps = 6, 64, 5.0, 1

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    load_before = loadavg()
    frames, tone = render_source(args.frames)
    identity = pyrage.x25519.Identity.generate()
    recipient = str(identity.to_public())
    print(f"{args.seconds} s of {WIDTH}x{HEIGHT}@{FPS} from {args.frames} pre-rendered frames, "
          f"x264 preset {SETTINGS.x264_preset}, {SETTINGS.video_bitrate_kbps} kb/s; "
          f"load average {load_before:.2f}", flush=True)

    floors, ours = [], []
    for rep in range(args.reps):
        floor_dir = OUT / f"floor-{rep}"
        ours_dir = OUT / f"ours-{rep}"
        floors.append(run_floor(frames, tone, args.seconds, floor_dir))
        print(f"  floor: {floors[-1]['wall']:.2f} s wall, {floors[-1]['cpu']:.2f} s CPU", flush=True)
        ours.append(run_ours(args.frames, args.seconds, ours_dir, recipient))
        print(f"  ours:  {ours[-1]['wall']:.2f} s wall, {ours[-1]['cpu']:.2f} s CPU", flush=True)
    floor = min(floors, key=lambda r: r["wall"])
    mine = min(ours, key=lambda r: r["wall"])
    x264_check = compare_x264_options(OUT / "floor-0", OUT / "ours-0", identity)

    segments = b"".join(p.read_bytes() for p in sorted((OUT / "floor-0").glob("seg-*.ts")))
    crypto_segments = bench_crypto(segments, recipient, OUT / "crypto-segments", reps=5)
    for rep in range(args.reps):  # plaintext media is scratch: gone before the long part
        shutil.rmtree(OUT / f"floor-{rep}", ignore_errors=True)
        shutil.rmtree(OUT / f"ours-{rep}", ignore_errors=True)
    random_bytes = os.urandom(args.random_mib << 20)
    crypto_random = bench_crypto(random_bytes, recipient, OUT / "crypto-random", reps=2)
    del random_bytes

    daemon = None if args.skip_daemon else daemon_peak_rss(args.daemon_seconds)
    load_after = loadavg()
    shutil.rmtree(OUT, ignore_errors=True)

    report(args, floor, mine, floors, ours, x264_check, crypto_segments, len(segments),
           crypto_random, daemon, load_before, load_after)
    return 0


# -- the source ----------------------------------------------------------------------------------

def render_source(k: int) -> tuple[list[np.ndarray], np.ndarray]:
    """K distinct frames, and one second of tone (440 whole cycles, so it loops seamlessly)."""
    bg = background(WIDTH, HEIGHT)
    frames = [draw_frame(bg, n, FPS) for n in range(k)]
    t = np.arange(RATE) / RATE
    tone = (TONE_LEVEL * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.float32)
    return frames, tone


# -- floor: ffmpeg alone --------------------------------------------------------------------------

def ffmpeg_command(fifo: Path, out_dir: Path) -> list[str]:
    """The settings of capture.pipeline.Encoders, spelled for the CLI. PyAV opens libx264 with
    thread_type=slice (its default), the CLI with frame|slice, which turns zerolatency's
    sliced threads off; `-thread_type slice` makes them the same x264 configuration (checked
    from the x264 SEI of both outputs)."""
    return ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-y",
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size", f"{WIDTH}x{HEIGHT}",
            "-framerate", str(FPS), "-i", "pipe:0",
            "-f", "f32le", "-ar", str(RATE), "-ac", "1", "-i", str(fifo),
            "-map", "0:v", "-map", "1:a",
            "-c:v", "libx264", "-preset", SETTINGS.x264_preset, "-tune", "zerolatency",
            "-g", str(FPS), "-b:v", f"{SETTINGS.video_bitrate_kbps}k", "-pix_fmt", "yuv420p",
            "-thread_type", "slice",
            "-c:a", "aac", "-ar", str(RATE), "-ac", "1",
            "-f", "segment", "-segment_time", str(SETTINGS.segment_seconds),
            "-segment_format", "mpegts", str(out_dir / "seg-%03d.ts")]


def run_floor(frames: list[np.ndarray], tone: np.ndarray, seconds: int, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True)
    fifo = out_dir / "audio.f32"
    os.mkfifo(fifo)
    feeder_cpu: dict[str, float] = {}
    t0 = time.perf_counter()
    proc = subprocess.Popen(ffmpeg_command(fifo, out_dir), stdin=subprocess.PIPE)

    def feed_video() -> None:
        c0 = time.thread_time()
        try:
            for n in range(seconds * FPS):
                proc.stdin.write(frames[n % len(frames)].data)
            proc.stdin.close()
        except BrokenPipeError:
            pass
        feeder_cpu["video"] = time.thread_time() - c0

    def feed_audio() -> None:
        c0 = time.thread_time()
        try:
            with open(fifo, "wb") as f:
                for _ in range(seconds):
                    f.write(tone.data)
        except BrokenPipeError:
            pass
        feeder_cpu["audio"] = time.thread_time() - c0

    feeders = [threading.Thread(target=feed_video, daemon=True),
               threading.Thread(target=feed_audio, daemon=True)]
    for thread in feeders:
        thread.start()
    peak = ProcWatcher(proc.pid)
    _, status, usage = os.wait4(proc.pid, 0)
    peak.stop()
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    for thread in feeders:
        thread.join(5)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg exited with {proc.returncode}")
    fifo.unlink()
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
            "sys": usage.ru_stime, "peak_rss_mib": peak.peak_hwm / 1024,
            "feeder_cpu": sum(feeder_cpu.values()),
            "segments": len(list(out_dir.glob("seg-*.ts"))),
            "bytes": sum(p.stat().st_size for p in out_dir.glob("seg-*.ts"))}


# -- ours: the real Recorder, in a child process ---------------------------------------------------

def run_ours(k: int, seconds: int, out_dir: Path, recipient: str) -> dict:
    out_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    params = {"k": k, "seconds": seconds, "dir": str(out_dir), "recipient": recipient}
    proc = subprocess.run([sys.executable, __file__, "--child-ours", json.dumps(params)],
                          capture_output=True, text=True)
    process_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"pipeline child failed:\n{proc.stderr}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall"] = process_wall
    result["segments"] = len(list(out_dir.glob("seg-*.ts.age")))
    result["bytes"] = sum(p.stat().st_size for p in out_dir.glob("seg-*.ts.age"))
    return result


class LoopMicrophone:
    """One second of tone, looped."""

    name = "microphone"

    def __init__(self, tone: np.ndarray):
        self._tone, self._at = np.concatenate([tone, tone]), 0

    def open(self) -> None: ...

    def close(self) -> None: ...

    def read(self, samples: int, timeout: float) -> np.ndarray:
        out = self._tone[self._at:self._at + samples]
        self._at = (self._at + samples) % RATE
        return out


def _child_ours(params: dict) -> int:
    frames, tone = render_source(params["k"])
    total = params["seconds"] * FPS
    camera, microphone = LoopCamera(frames, total, FPS), LoopMicrophone(tone)
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts from its parent's (vfork + exec).
    rss_before = proc_status(os.getpid())["VmHWM"]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    recorder = Recorder(camera, microphone, Path(params["dir"]), params["recipient"], SETTINGS)
    recorder.start()
    camera.ended.wait()
    entries = recorder.stop()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    if not isinstance(recorder.error, SourceEnded) or recorder.frames != total:
        print(f"recording failed: {recorder.error!r}, {recorder.frames} frames", file=sys.stderr)
        return 1
    print(json.dumps({
        "wall": wall, "cpu": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
        "user": ru1.ru_utime - ru0.ru_utime, "sys": ru1.ru_stime - ru0.ru_stime,
        "peak_rss_mib": proc_status(os.getpid())["VmHWM"] / 1024, "rss_before_mib": rss_before / 1024,
        "frames": recorder.frames, "sealed": len(entries)}))
    return 0


def compare_x264_options(floor_dir: Path, ours_dir: Path, identity) -> dict:
    """The x264 version and options both encoders wrote into their first segment's SEI."""
    floor = _x264_sei((floor_dir / "seg-000.ts").read_bytes())
    ours = _x264_sei(pyrage.decrypt(sorted(ours_dir.glob("seg-*.ts.age"))[0].read_bytes(),
                                    [identity]))
    f_opts, o_opts = _options(floor), _options(ours)
    differ = {k: (f_opts.get(k), o_opts.get(k)) for k in sorted(set(f_opts) | set(o_opts))
              if f_opts.get(k) != o_opts.get(k)}
    return {"floor_core": floor.split(" - ")[1].removeprefix("core ") if floor else "?",
            "ours_core": ours.split(" - ")[1].removeprefix("core ") if ours else "?",
            "differ": differ}


def _x264_sei(data: bytes) -> str:
    at = data.find(b"x264 - core")
    return data[at:data.index(b"\0", at)].decode(errors="replace") if at >= 0 else ""


def _options(sei: str) -> dict[str, str]:
    text = sei.split("options: ", 1)[-1]
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


# -- encryption: age CLI against our sink --------------------------------------------------------

def bench_crypto(data: bytes, recipient: str, work: Path, reps: int) -> dict[str, float]:
    """MB/s of each way to encrypt `data`: rounds of every way in turn, best round of each;
    output files are deleted as we go."""
    work.mkdir(parents=True)
    source = work / "in.bin"
    with open(source, "wb") as f:
        f.write(data)
        os.fsync(f.fileno())  # its write-back must not land inside the first measurement
    ways = {
        "age CLI (file -> file)": lambda out: _age_cli(source, out, recipient, fsync=False),
        "age CLI + fsync of its output": lambda out: _age_cli(source, out, recipient, fsync=True),
        "ours: SealingSink (32 KiB writes, sha256, fsync)":
            lambda out: _sealing_sink(data, out, recipient),
        "ours: os.pipe + encrypt_io thread (32 KiB writes)":
            lambda out: _pipe_encrypt_io(data, out, recipient),
        "pyrage.encrypt_io file -> file (no pipe)":
            lambda out: _encrypt_io_files(source, out / "out.age", recipient),
        # Without the output's page-cache and write-back costs: encryption and reading only.
        "age CLI (file -> /dev/null)":
            lambda out: _age_cli(source, Path(os.devnull), recipient, fsync=False),
        "pyrage.encrypt_io file -> /dev/null (no pipe)":
            lambda out: _encrypt_io_files(source, Path(os.devnull), recipient),
    }
    best = dict.fromkeys(ways, float("inf"))
    for _ in range(reps):
        for name, way in ways.items():
            out = work / "out"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            best[name] = min(best[name], way(out))
            shutil.rmtree(out)
    shutil.rmtree(work)
    return {name: len(data) / seconds / 1e6 for name, seconds in best.items()}


def _age_cli(source: Path, out: Path, recipient: str, fsync: bool) -> float:
    target = out if out == Path(os.devnull) else out / "out.age"
    t0 = time.perf_counter()
    subprocess.run(["age", "-r", recipient, "-o", str(target), str(source)], check=True)
    if fsync:
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    return time.perf_counter() - t0


def _sealing_sink(data: bytes, out: Path, recipient: str) -> float:
    view = memoryview(data)
    t0 = time.perf_counter()
    sink = SealingSink(out, 1, recipient)
    for at in range(0, len(view), CHUNK):
        sink.write(view[at:at + CHUNK])
    sink.finish()
    sink.commit()
    return time.perf_counter() - t0


def _pipe_encrypt_io(data: bytes, out: Path, recipient: str) -> float:
    view = memoryview(data)
    t0 = time.perf_counter()
    read_fd, write_fd = os.pipe()
    reader, writer = os.fdopen(read_fd, "rb"), os.fdopen(write_fd, "wb", buffering=0)
    target = open(out / "out.age", "wb")
    thread = threading.Thread(target=pyrage.encrypt_io, args=(
        reader, target, [pyrage.x25519.Recipient.from_str(recipient)]))
    thread.start()
    for at in range(0, len(view), CHUNK):
        writer.write(view[at:at + CHUNK])
    writer.close()
    thread.join()
    target.close()
    reader.close()
    return time.perf_counter() - t0


def _encrypt_io_files(source: Path, target_path: Path, recipient: str) -> float:
    t0 = time.perf_counter()
    with open(source, "rb") as reader, open(target_path, "wb") as target:
        pyrage.encrypt_io(reader, target, [pyrage.x25519.Recipient.from_str(recipient)])
    return time.perf_counter() - t0


# -- the daemon's peak RSS ------------------------------------------------------------------------

def daemon_peak_rss(seconds: float) -> dict:
    from hwsim.lab import Lab
    lab = Lab.create(OUT / "daemon-lab", teachers={"t-evans": "432187"},
                     capture={"width": WIDTH, "height": HEIGHT, "fps": FPS,
                              "segment_seconds": SETTINGS.segment_seconds,
                              "x264_preset": SETTINGS.x264_preset, "min_free_mb": 1},
                     sim={"realtime": False, "speed": 1000.0})
    with lab.daemon() as unit:
        idle_kib = proc_status(unit.proc.pid)["VmHWM"]
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
        unit.wait_state("recording")
        time.sleep(seconds)
        recording = proc_status(unit.proc.pid)
        frames = sum(1 for e in lab.timeline() if e["ev"] == "frame")
        unit.control("press")
        stopped = "idle"
        try:
            unit.wait_state("idle", timeout=60)
        except TimeoutError as e:
            stopped = str(e)
        end = proc_status(unit.proc.pid)
    return {"idle_hwm_mib": idle_kib / 1024, "recording_hwm_mib": recording["VmHWM"] / 1024,
            "end_hwm_mib": end["VmHWM"] / 1024, "frames": frames, "seconds": seconds,
            "stopped": stopped}


# -- the table ------------------------------------------------------------------------------------

def report(args, floor, mine, floors, ours, x264_check, crypto_segments, segments_size,
           crypto_random, daemon, load_before, load_after) -> None:
    print()
    print(f"capture: {args.seconds} s of {WIDTH}x{HEIGHT}@{FPS} + 48 kHz mono "
          f"(best of {args.reps} run(s) by wall time)")
    print(f"{'':44} {'wall s':>8} {'CPU s':>8} {'user':>7} {'sys':>7} {'peak RSS MiB':>13}")
    print(f"{'floor: ffmpeg process':44} {floor['wall']:8.2f} {floor['cpu']:8.2f} "
          f"{floor['user']:7.2f} {floor['sys']:7.2f} {floor['peak_rss_mib']:13.1f}")
    print(f"{'  + feeder threads (pipe writes; not in floor)':44} {'':8} "
          f"{floor['feeder_cpu']:8.2f}")
    print(f"{'ours: Recorder child, recording phase':44} {mine['wall']:8.2f} {mine['cpu']:8.2f} "
          f"{mine['user']:7.2f} {mine['sys']:7.2f} {mine['peak_rss_mib']:13.1f}")
    print(f"{'  child peak RSS before recording (frames)':44} {'':8} {'':8} {'':7} {'':7} "
          f"{mine['rss_before_mib']:13.1f}")
    print(f"{'  child process incl. start-up (wall)':44} {mine['process_wall']:8.2f}")
    print(f"segments: floor {floor['segments']} ({floor['bytes'] / 1e6:.1f} MB), ours "
          f"{mine['segments']} sealed ({mine['bytes'] / 1e6:.1f} MB ciphertext), "
          f"{mine['frames']} frames")
    print(f"x264: floor core {x264_check['floor_core']}, ours core {x264_check['ours_core']}; "
          f"options that differ: {x264_check['differ'] or 'none'}")
    if args.reps > 1:
        print("all runs, wall/CPU s: floor " + ", ".join(f"{r['wall']:.2f}/{r['cpu']:.2f}"
                                                          for r in floors)
              + "; ours " + ", ".join(f"{r['wall']:.2f}/{r['cpu']:.2f}" for r in ours))
    print()
    print(f"RATIO ours/floor wall: {mine['wall'] / floor['wall']:.2f}   (aim <= 1.2)")
    print(f"RATIO ours/floor CPU:  {mine['cpu'] / floor['cpu']:.2f}   (aim <= 1.2; floor with "
          f"its feeders: {mine['cpu'] / (floor['cpu'] + floor['feeder_cpu']):.2f})")
    print()
    for title, results in ((f"encryption, concatenated floor segments ({segments_size / 1e6:.1f}"
                            " MB, best of 5)", crypto_segments),
                           (f"encryption, {args.random_mib} MiB of random bytes (best of 2)",
                            crypto_random)):
        print(f"{title:56} {'MB/s':>8}")
        for name, rate in results.items():
            print(f"  {name:54} {rate:8.0f}")
        age = results["age CLI (file -> file)"]
        age_sync = results["age CLI + fsync of its output"]
        sink = results["ours: SealingSink (32 KiB writes, sha256, fsync)"]
        pipe = results["ours: os.pipe + encrypt_io thread (32 KiB writes)"]
        bare = (results["pyrage.encrypt_io file -> /dev/null (no pipe)"]
                / results["age CLI (file -> /dev/null)"])
        print(f"RATIO ours/age throughput: pipe+encrypt_io vs age {pipe / age:.2f}, "
              f"SealingSink vs age+fsync {sink / age_sync:.2f}   (aim >= 1.0)")
        print(f"      (pyrage vs age, both to /dev/null, no pipe: {bare:.2f})")
        print()
    if daemon is not None:
        print(f"daemon peak RSS (VmHWM): idle {daemon['idle_hwm_mib']:.1f} MiB, after "
              f"{daemon['seconds']:g} s recording {daemon['recording_hwm_mib']:.1f} MiB "
              f"({daemon['frames']} frames), after stop {daemon['end_hwm_mib']:.1f} MiB "
              f"[stop: {daemon['stopped']}]")
        print(f"pipeline child peak RSS {mine['peak_rss_mib']:.1f} MiB, of which "
              f"{mine['rss_before_mib']:.1f} MiB before recording; ffmpeg peak RSS "
              f"{floor['peak_rss_mib']:.1f} MiB")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}")


if __name__ == "__main__":
    sys.exit(main())
