"""An idle unit holds no media library: PyAV (FFmpeg, x264), numpy and OpenCV are loaded when a
recording starts, so the daemon's memory while it waits is what its job needs (bench/README.md,
"idle daemon RSS"). Read from the running daemon's own memory map."""
from __future__ import annotations

from pathlib import Path

MEDIA = ("libavcodec", "libx264", "numpy", "cv2")


def _mapped(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name in MEDIA if name in maps}


def test_the_idle_daemon_has_no_media_library_loaded_until_it_records(unit):
    unit.wait_state("idle")
    assert _mapped(unit.proc.pid) == set()
    assert unit.lesson("t-evans", seconds=0.3)["ok"]
    assert {"libavcodec", "numpy"} <= _mapped(unit.proc.pid)  # the check can see them
