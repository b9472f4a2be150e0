"""The `pi` hardware backend: a Raspberry Pi's GPIO (gpiozero), camera (picamera2, or a USB
webcam through FFmpeg's v4l2 input: `[camera] kind`) and sound card (sounddevice). Registered as
`pi` in the entry-point group `classcam.hardware`."""
from __future__ import annotations

import gpiozero

from appliance.config import Config
from appliance.hardware import Hardware
from led_indicator.lights import RecordingLed, StatusLed


def make_pi_hardware(config: Config) -> Hardware:
    """The unit's real devices, on the pins and at the sizes `config` names."""
    from appliance.speaker import SoundDeviceSpeaker
    from capture import audio
    from capture.pi import PiCamera
    from capture.pipeline import Camera
    gpio, c, a = config.gpio, config.capture, config.audio
    heard = a.microphone_in_use  # [audio] mode: the room's, the teacher's, or none
    audio.initialise()  # now, not when a lesson starts: PortAudio's first use prints (P9)
    camera: Camera
    if config.camera.kind == "v4l2":  # a USB webcam, encoded by the chain
        from capture.v4l2 import V4l2Camera
        camera = V4l2Camera(config.camera.device, c.width, c.height, c.fps,
                            input_format=config.camera.input_format or None)
    else:
        camera = PiCamera((c.width, c.height), c.fps, close_timeout=c.stall_timeout_s)
    return Hardware(
        button=gpiozero.Button(gpio.button_pin, pull_up=True, bounce_time=gpio.button_bounce_s or None),
        recording_led=RecordingLed(gpio.recording_led_pin),
        status_led=StatusLed(gpio.status_led_pins),
        speaker=SoundDeviceSpeaker(a.speaker, a.speaker_rate),
        camera=camera,
        microphone=None if heard is None else audio.SoundDeviceMicrophone(
            c.audio_rate, heard, name=a.microphone_name),
        check_audio=lambda: audio.check_devices(a.speaker, heard, a.allow_hdmi),
    )
