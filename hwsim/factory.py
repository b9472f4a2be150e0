"""The `sim` hardware backend: every part of the unit, simulated, all writing one timeline.
Registered as `sim` in the entry-point group `classcam.hardware` by the `classcam-sim`
distribution; the daemon finds it by that name and never imports it."""
from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING, Any
from dataclasses import dataclass, field

import gpiozero

from appliance.config import Config
from appliance.hardware import Hardware
from hwsim import control
from hwsim.capture import (TEACHER_TONE_HZ, SimCamera, SimEncodingCamera, SimMicrophone,
                           TracedMicrophone)
from hwsim.faults import Faults
from hwsim.gpio import SimPinFactory
from hwsim.speaker import MemorySpeaker
from hwsim.timeline import Timeline
from led_indicator.lights import RecordingLed, StatusLed

if TYPE_CHECKING:  # the pad service, evdev and python-fido2's CTAP: loaded when the sim runs a pad
    from hwsim.keypad import SimPad


@dataclass
class SimParts:
    """The simulated parts a test or the control socket reaches into."""

    timeline: Timeline
    faults: Faults
    pin_factory: SimPinFactory
    speaker: MemorySpeaker
    devices: dict[str, SimCamera | SimEncodingCamera | SimMicrophone | TracedMicrophone]
    status_led: StatusLed | None = None
    pad: SimPad | None = None

    @property
    def button_pin(self):
        return self.pin_factory.pin(self._label_pin("button"))

    @property
    def recording_led_pin(self):
        return self.pin_factory.pin(self._label_pin("recording_led"))

    def _label_pin(self, label: str) -> str:
        return next(pin for pin, name in self.pin_factory.labels.items() if name == label)


@dataclass
class SimHardware(Hardware):
    """The daemon's `Hardware`, with the simulated parts behind it for the simulator's own code
    (the control socket, tests)."""

    parts: SimParts = field(kw_only=True)


def make_sim_hardware(config: Config) -> SimHardware:
    """Simulated hardware for `config`; its `SimParts` is `hardware.parts`."""
    sim = config.sim
    timeline = Timeline(sim.timeline)
    faults = Faults()
    gpio = config.gpio
    labels = {gpio.button_pin: "button", gpio.recording_led_pin: "recording_led"}
    labels.update(zip(gpio.status_led_pins, ("status_red", "status_green", "status_blue"), strict=False))
    factory = SimPinFactory(timeline, faults, labels)
    inner = None
    # Real sound devices, checked as on a Pi when the configuration names them in [audio].
    named = "audio" in config.model_fields_set
    if sim.speaker == "sounddevice":
        from appliance.speaker import SoundDeviceSpeaker
        from capture import audio
        audio.initialise()
        inner = (SoundDeviceSpeaker(config.audio.speaker, config.audio.speaker_rate) if named
                 else SoundDeviceSpeaker())
    speaker = MemorySpeaker(timeline, faults, speed=sim.speed, inner=inner)
    c = config.capture
    source = None
    if sim.camera_file is not None:
        from capture.v4l2 import V4l2Camera
        source = V4l2Camera(str(sim.camera_file), c.width, c.height, c.fps, device_format=None,
                            loop=True)
    sensor = SimCamera(timeline, faults, c.width, c.height, c.fps, sim.realtime, source,
                       close_timeout=c.stall_timeout_s)
    camera: SimCamera | SimEncodingCamera = sensor
    if sim.encoder == "picamera2":  # the Pi camera's path: the camera encodes
        camera = SimEncodingCamera(camera)
    microphones = {
        "microphone": SimMicrophone(timeline, faults, c.audio_rate, sim.realtime),
        "teacher_microphone": SimMicrophone(timeline, faults, c.audio_rate, sim.realtime,
                                            name="teacher_microphone",
                                            tone_hz=TEACHER_TONE_HZ)}
    devices: dict[str, SimCamera | SimEncodingCamera | SimMicrophone | TracedMicrophone] = {
        "camera": camera, **microphones}
    # [audio] mode: the room's microphone, the teacher's, or none (video only).
    a = config.audio
    microphone: SimMicrophone | TracedMicrophone | None = (
        None if a.microphone_in_use is None else microphones[a.microphone_name])
    if sim.microphone == "sounddevice" and a.microphone_in_use is not None:
        from capture import audio
        audio.initialise()
        # The configured device through PortAudio, as on a Pi (a PulseAudio source in tests).
        microphone = TracedMicrophone(
            audio.SoundDeviceMicrophone(c.audio_rate, a.microphone_in_use, a.microphone_name),
            timeline, a.microphone_in_use)
        devices[a.microphone_name] = microphone
    parts = SimParts(timeline, faults, factory, speaker, devices)
    parts.status_led = StatusLed(gpio.status_led_pins, pin_factory=factory)
    hw = SimHardware(
        button=gpiozero.Button(gpio.button_pin, pull_up=True, bounce_time=None,
                               pin_factory=factory),
        recording_led=RecordingLed(gpio.recording_led_pin, pin_factory=factory),
        status_led=parts.status_led,
        speaker=speaker,
        camera=camera,
        microphone=microphone,
        trace=functools.partial(_trace, timeline, sensor),
        free_bytes=lambda path: 0 if "disk_full" in faults else shutil.disk_usage(path).free,
        parts=parts,
    )
    real_speaker, real_microphone = sim.speaker == "sounddevice", sim.microphone == "sounddevice"
    if named and (real_speaker or real_microphone):
        from capture import audio
        hw.check_audio = lambda: audio.check_devices(
            a.speaker if real_speaker else None,
            a.microphone_in_use if real_microphone else None, a.allow_hdmi)
    if sim.pad_keystore is not None:
        # The real pad service (pinpad), on a simulated keypad. On a unit the pad runs in its
        # own process (classcam-pinpad), so it is imported only when the simulator runs one.
        from hwsim.keypad import SimPad
        parts.pad = SimPad(sim.pad_keystore, config.pad.socket, timeline, sim.security_keys)
        hw.tasks.append(lambda unit: parts.pad.run())
    if sim.control_socket is not None:
        hw.tasks.append(lambda unit: control.serve(sim.control_socket, unit, parts))
    hw.on_close.append(timeline.close)
    return hw


def _trace(timeline: Timeline, sensor: SimCamera, event: str, **fields: Any) -> None:
    """The unit's trace, into the timeline; a pause also tells the simulated sensor to keep its
    clock running while the camera is closed (SimCamera.keep_clock)."""
    if event == "paused":
        sensor.keep_clock()
    timeline(event, **fields)
