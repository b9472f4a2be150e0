"""Where a lesson is, in seconds of media (`Recorder.media_time_s`: what a bookmark stores and
where a resumed capture's timestamps go on from) before its capture has read a frame: where
that capture starts, so a pause right after a resume, or a bookmark before the first frame, is
not put back at the recording's start."""
from __future__ import annotations

import pyrage

from capture.pipeline import CaptureSettings, Recorder


class _Unused:
    name = "unused"

    def open(self) -> None: ...

    def close(self) -> None: ...


def _recorder(tmp_path, start_us: int) -> Recorder:
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    return Recorder(_Unused(), _Unused(), tmp_path, recipient, CaptureSettings(),  # type: ignore[arg-type]
                    first_index=3, start_us=start_us)


def test_before_its_first_frame_a_capture_is_at_its_own_start(tmp_path):
    assert _recorder(tmp_path, start_us=0).media_time_s == 0.0
    assert _recorder(tmp_path, start_us=12_480_000).media_time_s == 12.48
