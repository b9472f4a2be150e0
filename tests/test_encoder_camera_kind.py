"""`[camera] kind` picks the Pi's camera: the camera module through picamera2 (its own H.264
encoder) or a USB webcam through FFmpeg's v4l2 input (the chain's libx264); anything else is a
configuration error naming the key."""
from __future__ import annotations

import pytest

from appliance.config import ConfigError, parse
from capture.pipeline import EncodingCamera


def _config(tmp_path, **camera):
    return parse({"device": {"id": "unit-1", "roster_dir": str(tmp_path)},
                  "capture": {"width": 640, "height": 480, "fps": 30},
                  "camera": camera})


@pytest.fixture
def mock_pins(monkeypatch):
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory, MockPWMPin
    monkeypatch.setattr(Device, "pin_factory", MockFactory(pin_class=MockPWMPin))


def test_kind_v4l2_is_a_usb_webcam_read_through_ffmpeg_and_encoded_by_the_chain(
        tmp_path, mock_pins):
    from appliance.pi_hardware import make_pi_hardware
    from capture.v4l2 import V4l2Camera
    hw = make_pi_hardware(_config(tmp_path, kind="v4l2", device="/dev/video2",
                                  input_format="mjpeg"))
    try:
        camera = hw.camera
        assert isinstance(camera, V4l2Camera) and not isinstance(camera, EncodingCamera)
        assert (camera._source, camera._format) == ("/dev/video2", "v4l2")
        assert camera._options == {"video_size": "640x480", "framerate": "30",
                                   "input_format": "mjpeg"}
    finally:
        hw.close()


def test_kind_picamera2_is_the_camera_module_with_its_own_encoder(tmp_path, mock_pins):
    from appliance.pi_hardware import make_pi_hardware
    from capture.pi import PiCamera
    hw = make_pi_hardware(_config(tmp_path))  # the default
    try:
        assert isinstance(hw.camera, PiCamera) and isinstance(hw.camera, EncodingCamera)
        assert (hw.camera._size, hw.camera._fps) == ((640, 480), 30)
    finally:
        hw.close()


def test_an_unknown_camera_kind_is_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"camera\.kind: Input should be 'picamera2' or 'v4l2'"):
        _config(tmp_path, kind="opencv")
