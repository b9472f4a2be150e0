"""The unit's configuration: one TOML file, validated completely at start-up.

An unknown key, a wrong type or a missing roster directory is a `ConfigError` whose message is one
line naming the key and the reason, so the journal tells IT exactly what to fix. Nothing in the
configuration can start a recording (P1): it has no such key.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic_core import ErrorDetails
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from capture.zone_shapes import Zone, polygon_problem, rect_problem
from formats import ids
from led_indicator.off import DEFAULT_LED_PIN

DEFAULT_PATH = Path("/etc/classcam/classcam.toml")

# The protocol's wording: the camera records video and audio, for the teacher's own professional
# development and training only.
START_NOTICE_EN = (
    "This classroom camera is now recording video and audio, for the teacher's own "
    "professional development and training only."
)
START_NOTICE_CY = (
    "Mae camera'r ystafell ddosbarth hon yn recordio fideo a sain nawr, at ddiben datblygiad "
    "proffesiynol a hyfforddiant yr athro yn unig."
)
# With `[audio] mode = "none"` nothing is heard or kept but the picture, and the room is told so.
START_VIDEO_ONLY_NOTICE_EN = (
    "This classroom camera is now recording video only, without sound, for the teacher's own "
    "professional development and training only."
)
START_VIDEO_ONLY_NOTICE_CY = (
    "Mae camera'r ystafell ddosbarth hon yn recordio fideo yn unig nawr, heb sain, at ddiben "
    "datblygiad proffesiynol a hyfforddiant yr athro yn unig."
)
STOP_NOTICE_EN = "The classroom camera has stopped recording."
STOP_NOTICE_CY = "Mae camera'r ystafell ddosbarth wedi stopio recordio."
DISCARD_NOTICE_EN = "The last recording has been discarded."
DISCARD_NOTICE_CY = "Mae'r recordiad olaf wedi'i ddileu."
FULL_NOTICE_EN = ("This camera cannot record now: its storage is full until recordings have been "
                  "uploaded. Nothing already recorded has been lost.")
FULL_NOTICE_CY = ("Ni all y camera hwn recordio nawr: mae ei storfa'n llawn nes i recordiadau "
                  "gael eu huwchlwytho. Nid oes dim a recordiwyd eisoes wedi'i golli.")


# TOML has no path type: paths are the one place a string converts (strict mode refuses "90" for 90).
FilePath = Annotated[Path, Field(strict=False)]


class ConfigError(Exception):
    """The configuration cannot be used; `str()` is one line naming the key and the reason."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeviceConfig(_Section):
    id: str
    roster_dir: FilePath = Path("/etc/classcam/teachers.d")
    state_dir: FilePath = Path("/var/lib/classcam")
    runtime_dir: FilePath = Path("/run/classcam")

    @field_validator("id")
    @classmethod
    def _device_id(cls, value: str) -> str:
        problem = ids.device_id_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class RecordingConfig(_Section):
    max_minutes: float = Field(default=90, gt=0, le=24 * 60)
    arm_timeout_s: float = Field(default=60, gt=0, le=600)
    # A paused recording not resumed within this long is finished (camera and mic stay closed).
    max_pause_minutes: float = Field(default=30, gt=0, le=24 * 60)


class CaptureConfig(_Section):
    width: int = Field(default=1280, ge=160, le=3840)
    height: int = Field(default=720, ge=120, le=2160)
    fps: int = Field(default=25, ge=1, le=60)
    segment_seconds: int = Field(default=10, ge=1, le=600)
    audio_rate: Literal[16000, 32000, 44100, 48000] = 48000
    video_bitrate_kbps: int = Field(default=2500, ge=100, le=50000)
    audio_bitrate_kbps: int = Field(default=128, ge=32, le=320)
    # libx264's preset where the chain encodes (a USB webcam): picamera2's own software path
    # uses "ultrafast"; a slower one costs a Pi several times the CPU per frame.
    x264_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "ultrafast"
    # Recording stops (sealing what it has) rather than start a segment with less free space.
    min_free_mb: float = Field(default=200, gt=0)
    # A camera or microphone that delivers nothing for this long has failed.
    stall_timeout_s: float = Field(default=2.0, gt=0, le=60)
PAUSED_NOTICE_EN = ("Recording is paused. The camera and microphone are off until the teacher "
                    "resumes.")
PAUSED_NOTICE_CY = ("Mae'r recordio wedi'i oedi. Mae'r camera a'r meicroffon i ffwrdd nes i'r "
                    "athro ailddechrau.")


class CameraConfig(_Section):
    """Which camera a Pi records from (ignored with `--hw sim`)."""

    # "picamera2": the camera module (libcamera), encoded by picamera2's H264Encoder (the Pi 4's
    # hardware encoder). "v4l2": a USB webcam, read through FFmpeg and encoded with libx264.
    kind: Literal["picamera2", "v4l2"] = "picamera2"
    device: str = "/dev/video0"   # the webcam, for kind "v4l2"
    # What the webcam sends, for kind "v4l2": "mjpeg" or "yuyv422"; empty: FFmpeg's choice.
    input_format: Literal["", "mjpeg", "yuyv422"] = ""


class NoticeConfig(_Section):
    languages: list[Literal["en", "cy"]] = Field(default=["en", "cy"], min_length=1)
    start_en: str = Field(default=START_NOTICE_EN, min_length=1)
    start_cy: str = Field(default=START_NOTICE_CY, min_length=1)
    # The start notice when `[audio] mode = "none"`: video only.
    start_video_only_en: str = Field(default=START_VIDEO_ONLY_NOTICE_EN, min_length=1)
    start_video_only_cy: str = Field(default=START_VIDEO_ONLY_NOTICE_CY, min_length=1)
    stop_en: str = Field(default=STOP_NOTICE_EN, min_length=1)
    stop_cy: str = Field(default=STOP_NOTICE_CY, min_length=1)
    discard_en: str = Field(default=DISCARD_NOTICE_EN, min_length=1)
    discard_cy: str = Field(default=DISCARD_NOTICE_CY, min_length=1)
    full_en: str = Field(default=FULL_NOTICE_EN, min_length=1)
    full_cy: str = Field(default=FULL_NOTICE_CY, min_length=1)
    paused_en: str = Field(default=PAUSED_NOTICE_EN, min_length=1)
    paused_cy: str = Field(default=PAUSED_NOTICE_CY, min_length=1)
    words_per_minute: int = Field(default=150, ge=80, le=400)

    def texts(self, kind: Literal["start", "start_video_only", "stop", "discard", "full", "paused"]
              ) -> list[tuple[str, str]]:
        """(language, text) pairs to speak for `kind`, in the configured order."""
        return [(lang, getattr(self, f"{kind}_{lang}")) for lang in self.languages]


class PadConfig(_Section):
    socket: FilePath = Path("/run/classcam/pinpad.sock")
    socket_group: str = "classcam-pinpad"
    serial: FilePath | None = None
    serial_baud: int = Field(default=115200, gt=0)
    # A socket connection that sends no line for this long is closed; the pad reconnects.
    idle_timeout_s: float = Field(default=300, gt=0, le=86400)
    # A line must end this long after its first byte, or the pad is dropped.
    line_timeout_s: float = Field(default=10, gt=0, le=300)
    # A pad that does not take the unit's answers for this long is not reading: dropped (a
    # serial pad is then a fault until it opens again).
    write_timeout_s: float = Field(default=5, gt=0, le=300)


class UploadConfig(_Section):
    """Where sealed recordings go: the teachers' accounts (README, "The upload API")."""

    url: str = ""  # empty: nothing is uploaded; recordings wait in the spool
    ca_bundle: FilePath | None = None   # the account server's CA; None: the system's CAs
    client_cert: FilePath | None = None  # the unit's own certificate and key (mutual TLS)
    client_key: FilePath | None = None
    connect_timeout_s: float = Field(default=10, gt=0, le=300)
    read_timeout_s: float = Field(default=60, gt=0, le=600)
    chunk_mb: float = Field(default=16, gt=0, le=1024)  # larger files go in resumable ranges
    bandwidth_kbps: int = Field(default=0, ge=0)        # 0: no cap
    retry_max_s: float = Field(default=300, gt=0, le=86400)  # longest wait between retries
    hold_s: float = Field(default=3600, gt=0, le=7 * 86400)  # after the server refuses a file

    @model_validator(mode="after")
    def _mutual_tls(self) -> UploadConfig:
        if self.url.startswith("https://") and (self.client_cert is None or self.client_key is None):
            raise ValueError("client_cert and client_key are required for https (the unit "
                             "authenticates with its own key)")
        for name in ("ca_bundle", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a file")
        return self


class SpoolConfig(_Section):
    # The most the spool may hold. When a segment would not fit, recording stops, sealing what it
    # has, and no new one starts; nothing unconfirmed is ever deleted to make room.
    quota_mb: float = Field(default=4096, gt=0)


class HealthConfig(_Section):
    """Device health for IT (README, "Health over MQTT"): published, probed and written to the
    journal on this fixed period only, never at a moment a recording chose (P9)."""

    period_s: float = Field(default=300, gt=0, le=86400)
    broker: str = ""   # the MQTT broker's host name; empty: no MQTT (journal and doctor only)
    port: int = Field(default=8883, gt=0, lt=65536)
    ca_bundle: FilePath | None = None    # the broker's CA; None: the system's CAs
    username: str = ""                   # default: the device id (the broker's ACL uses it)
    password_file: FilePath | None = None
    client_cert: FilePath | None = None  # or log in with a certificate (CN = device id)
    client_key: FilePath | None = None
    keepalive_s: int = Field(default=60, ge=5, le=3600)

    @model_validator(mode="after")
    def _credentials(self) -> HealthConfig:
        if self.broker and self.password_file is None and self.client_cert is None:
            raise ValueError("password_file or client_cert is required with a broker (the "
                             "broker's ACL lets each unit publish only under its own name)")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together")
        for name in ("ca_bundle", "password_file", "client_cert", "client_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name} {path} is not a file")
        return self


class AudioConfig(_Section):
    """The unit's loudspeaker and microphone, by PortAudio device name (README, "[audio]").

    A name is matched as sounddevice matches it: a device whose name contains it, e.g.
    "Headphones" for "bcm2835 Headphones: - (hw:0,0)", or an ALSA PCM defined in asound.conf.
    Checked at start-up and before every arm: a device that is missing, or that is HDMI, is a
    fault and the unit does not arm, since the notice must reach the room (P3). "default" is
    ALSA's default device, which on a headless Pi is HDMI: it counts as HDMI.

    `mode` says what is heard: "room", the room's microphone (`microphone`); "teacher", only a
    microphone the teacher wears or stands at (`teacher_microphone`, a second device), the room's
    never opened; "none", no microphone at all: video only, and the start notice says so."""

    speaker: str = "default"
    microphone: str = "default"
    mode: Literal["room", "teacher", "none"] = "room"
    teacher_microphone: str = ""  # required with mode "teacher"
    # Let an HDMI output (a monitor's or a classroom screen's speakers) play the notice.
    allow_hdmi: bool = False
    # The rate the notice is played at, resampled to it; 0: the speaker's own default rate.
    speaker_rate: int = Field(default=0, ge=0, le=192000)

    @field_validator("speaker", "microphone")
    @classmethod
    def _named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a device")
        return value

    @model_validator(mode="after")
    def _teacher_named(self) -> AudioConfig:
        if self.mode == "teacher" and not self.teacher_microphone.strip():
            raise ValueError('teacher_microphone must name a device with mode = "teacher"')
        return self

    @property
    def microphone_name(self) -> str:
        """What the unit calls the microphone in use, in its journal lines: its key here."""
        return "teacher_microphone" if self.mode == "teacher" else "microphone"

    @property
    def microphone_in_use(self) -> str | None:
        """The device name of the one microphone the unit opens, or None (mode "none")."""
        return {"room": self.microphone, "teacher": self.teacher_microphone,
                "none": None}[self.mode]


class GpioConfig(_Section):
    button_pin: str = "GPIO17"
    recording_led_pin: str = DEFAULT_LED_PIN
    status_led_pins: list[str] = Field(default=["GPIO5", "GPIO6", "GPIO13"], min_length=3, max_length=3)
    button_bounce_s: float = Field(default=0.05, ge=0, le=1)
    # The record button held this long while recording pauses (a shorter press acts on release).
    long_press_s: float = Field(default=1.5, ge=0.3, le=10)


class ClockConfig(_Section):
    # "auto": trust iat/exp only when systemd-timesyncd says the clock is synchronised.
    synchronised: Literal["auto", "yes", "no"] = "auto"
    skew_s: float = Field(default=300, ge=0, le=3600)


class SimConfig(_Section):
    """Settings of the simulated hardware; ignored with `--hw pi`."""

    timeline: FilePath | None = None
    control_socket: FilePath | None = None
    pad_keystore: FilePath | None = None
    # The teachers' simulated FIDO2 security keys, one state file each: <dir>/<teacher_id>.json.
    security_keys: FilePath | None = None
    # "sounddevice": play through PortAudio as well, to [audio] speaker when the configuration
    # has an [audio] table (checked as on a Pi; the simulated microphone is not), else to
    # PortAudio's default device, unchecked.
    speaker: Literal["memory", "sounddevice"] = "memory"
    # Frames and samples at the real rate (true), or as fast as the encoder takes them (false).
    realtime: bool = True
    # Read the camera's frames from this video file (the USB-webcam path) instead of drawing them.
    camera_file: FilePath | None = None
    # "simulated": the microphone [audio] mode names is simulated (a tone: 440 Hz for the room's,
    # 660 Hz for the teacher's); "sounddevice": it is that device through PortAudio, as on a Pi.
    microphone: Literal["simulated", "sounddevice"] = "simulated"
    # Who encodes: "libx264", the chain (as for a USB webcam); "picamera2", the camera itself,
    # writing to the chain's Output as picamera2's H264Encoder does (as for the Pi camera).
    encoder: Literal["libx264", "picamera2"] = "libx264"
    # How fast simulated time runs for sounds: 1.0 is real time; tests use more.
    speed: float = Field(default=1.0, gt=0, le=10000)


class ZoneConfig(_Section):
    """One privacy zone, filled solid in every frame before any encoder (capture/zones.py): a
    `rect = [x0, y0, x1, y1]` or a `polygon = [[x, y], ...]`, relative to the frame (0 to 1,
    origin top left), so it stays in place when the resolution changes."""

    rect: list[float] | None = None
    polygon: list[list[float]] | None = None

    @field_validator("rect")
    @classmethod
    def _rect(cls, value: list[float] | None) -> list[float] | None:
        problem = None if value is None else rect_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, value: list[list[float]] | None) -> list[list[float]] | None:
        problem = None if value is None else polygon_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> ZoneConfig:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("a zone is either a rect or a polygon")
        return self

    def zone(self) -> Zone:
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return Zone(rect=(x0, y0, x1, y1))
        assert self.polygon is not None, "checked by _one_shape"
        return Zone(polygon=tuple((x, y) for x, y in self.polygon))


class PrivacyConfig(_Section):
    """Privacy zones, and what the notice sheet (`classcam notice-sheet`) tells the room and the
    school's data-protection lead."""

    zones: list[ZoneConfig] = []
    # Whom to ask to have a recording deleted, as the notice sheet prints it; empty: the teacher.
    contact: str = ""
    # The notice sheet names the enrolled teachers only if this is true.
    name_teachers: bool = False
    # The room, school or unit's name on the notice sheet; empty: the device id.
    place: str = ""

    def capture_zones(self) -> tuple[Zone, ...]:
        """The zones as the capture chain takes them."""
        return tuple(z.zone() for z in self.zones)


class Config(_Section):
    device: DeviceConfig
    recording: RecordingConfig = RecordingConfig()
    capture: CaptureConfig = CaptureConfig()
    camera: CameraConfig = CameraConfig()
    notice: NoticeConfig = NoticeConfig()
    pad: PadConfig = PadConfig()
    gpio: GpioConfig = GpioConfig()
    audio: AudioConfig = AudioConfig()
    clock: ClockConfig = ClockConfig()
    upload: UploadConfig = UploadConfig()
    spool: SpoolConfig = SpoolConfig()
    health: HealthConfig = HealthConfig()
    sim: SimConfig = SimConfig()
    privacy: PrivacyConfig = PrivacyConfig()

    @field_validator("device")
    @classmethod
    def _roster_dir_exists(cls, device: DeviceConfig) -> DeviceConfig:
        if not device.roster_dir.is_dir():
            raise ValueError(f"roster_dir {device.roster_dir} is not a directory")
        return device


def load(path: Path) -> Config:
    """Read and validate the configuration at `path`, or raise `ConfigError`."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(raw, source=str(path))


def parse(raw: dict, source: str = "config") -> Config:
    """Validate an already-parsed TOML document."""
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"]) or "(top level)"
        why = _reason(first)
        raise ConfigError(f"{source}: {key}: {why}") from None


def _reason(error: ErrorDetails) -> str:
    if error["type"] == "extra_forbidden":
        return "unknown key"
    if error["type"] == "missing":
        return "required key is missing"
    msg = error["msg"]
    return msg.removeprefix("Value error, ")
