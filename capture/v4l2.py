"""A camera read through PyAV (FFmpeg): a USB webcam (`/dev/video0`, FFmpeg's `v4l2` input) or
a video file.

    camera = V4l2Camera("/dev/video0", width=1280, height=720, fps=25)
    camera.open(); frame = camera.read(timeout=2.0); camera.close()

Pictures come out as YUV 4:2:0 at the configured size (scaled by FFmpeg if the source differs),
stamped with the kernel's capture time of each buffer (V4L2's timestamps, CLOCK_MONOTONIC), so
a frame the webcam dropped is a gap in time. A file can `loop`, which is how the simulator plays
a recorded classroom; otherwise its end is a `CaptureError`.

Decoding blocks in FFmpeg with no timeout (a webcam unplugged mid-frame), so reads run on a
thread of their own and `read(timeout)` stops waiting after `timeout`. A camera whose read has
not returned refuses to close: FFmpeg must not close an input it is reading from, and the
camera may still be capturing, so the recording LED stays lit (P2).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from capture.devices import CaptureError, ReadThread, bounded_close
from capture.pipeline import CameraFrame

if TYPE_CHECKING:
    import av
    import av.container

# Opening or closing a webcam that takes longer than this has failed (it may still be open).
OPEN_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 5.0


class V4l2Camera:
    """A V4L2 webcam (`input_format` "mjpeg" or "yuyv422", as the webcam offers) or a video
    file (`device_format=None`) as a camera."""

    name = "camera"

    def __init__(self, source: str, width: int, height: int, fps: int = 25,
                 device_format: str | None = "v4l2", input_format: str | None = None,
                 loop: bool = False):
        self._source = source
        self._size = (width, height)
        self._format = device_format
        self._options = {}
        if device_format == "v4l2":
            self._options = {"video_size": f"{width}x{height}", "framerate": str(fps)}
            if input_format is not None:
                self._options["input_format"] = input_format
        self._loop = loop
        self._container: av.container.InputContainer | None = None
        self._pictures: Iterator[av.VideoFrame] | None = None
        self._reads: ReadThread[CameraFrame] | None = None

    def open(self) -> None:
        import av
        if self._container is not None:
            self.close()  # refused earlier while a read was stuck; raises if it still is
        reads: ReadThread[av.container.InputContainer] = ReadThread(f"camera {self._source}")
        try:
            # Opening a webcam can block too: bounded like a read.
            container = reads.call(lambda: av.open(self._source, format=self._format,
                                                   options=self._options), OPEN_TIMEOUT_S,
                                "not open")
        except CaptureError as e:
            raise CaptureError(f"camera: cannot open {self._source}: {e}") from None
        finally:
            reads.close()
        self._container = container
        self._pictures = container.decode(video=0)
        self._reads = ReadThread(f"camera {self._source}")

    def read(self, timeout: float) -> CameraFrame:
        """The next picture; `CaptureError` if none came within `timeout` seconds."""
        reads = self._reads
        if reads is None:
            raise CaptureError("camera is not open")
        return reads.call(self._next_frame, timeout)

    def close(self) -> None:
        """Release the camera; `CaptureError` (and still open) while a read has not returned."""
        container, reads = self._container, self._reads
        if container is None or reads is None:
            return
        if not reads.close():
            raise CaptureError(f"camera: a read of {self._source} has not returned; "
                               "it may still be capturing")
        self._container = self._reads = self._pictures = None
        bounded_close(self.name, container.close, CLOSE_TIMEOUT_S)

    def _next_frame(self) -> CameraFrame:
        container, pictures = self._container, self._pictures
        assert container is not None and pictures is not None, "read only while open"
        picture = next(pictures, None)
        if picture is None and self._loop:
            container.seek(0)
            self._pictures = pictures = container.decode(video=0)
            picture = next(pictures, None)
        if picture is None or picture.pts is None or picture.time_base is None:
            raise CaptureError(f"camera: no frame from {self._source}")
        taken_ns = int(picture.pts * picture.time_base * 1_000_000_000)
        width, height = self._size
        if (picture.width, picture.height, picture.format.name) != (width, height, "yuv420p"):
            picture = picture.reformat(width=width, height=height, format="yuv420p")
        return CameraFrame(picture, taken_ns)
