"""The daemon's distribution, `classcam`: what runs on the unit (appliance, capture, uploader,
led_indicator) and the PIN pad service (pinpad, its own user and unit). The formats and the
teacher's tools come from `classcam-teacher` (dist/teacher), whose `classcam` command this
distribution adds its commands to; the simulator is `classcam-sim` (dist/sim), never installed
with the daemon."""
from setuptools import find_packages, setup

setup(
    name="classcam",
    version="0.1.0",
    description="A classroom camera a teacher uses to record their own lessons, encrypted to them",
    python_requires=">=3.11",
    packages=find_packages(include=["appliance*", "capture*", "uploader*", "led_indicator*",
                                    "pinpad*"]),
    install_requires=[
        "classcam-teacher",
        "cryptography>=44",  # 44: Argon2id (the pad's keystore)
        # 2.14 turns a deeply nested header into DecodeError (2.13 and older let a RecursionError
        # out); 2.12 refuses unknown "crit" header parameters (CVE-2026-32597).
        "PyJWT[crypto]>=2.14",
        # libsodium's check that an Ed25519 public key is not a small-order point
        "PyNaCl>=1.5",
        "pyrage>=1.1",
        "gpiozero>=2.0",
        "pydantic>=2.5",
        "systemd-python>=235",   # journald fields and sd_notify (needs libsystemd-dev to build)
        "paho-mqtt>=2.1",        # health over MQTT v5
        "pyserial>=3.5",
        "pyserial-asyncio-fast>=0.16",
        # 17 added OutputContainer.add_mux_stream, which muxes an encoder's packets (the
        # segmenter); 18 passes the H.264 parser's keyframe flag on (the Output also takes the
        # encoder's own flag).
        "av>=17",
        "numpy>=1.24",
        # The upload client (uploader/client.py): urllib3 directly, not requests on top of it
        # (a few MiB less in the idle daemon); certifi: the default CAs, as requests had.
        "urllib3>=2.0",
        "certifi",
        "tenacity>=8.2",
        # The pad service: the USB keypad (evdev, grabbed) and Argon2id (cryptography>=44).
        # 1.6: Debian 12's python3-evdev, which the Debian package uses (PyPI has only sources).
        "evdev>=1.6",
        # FIDO2 security keys: the pad asks the teacher's key for an assertion (CTAP2 over USB
        # HID), the unit verifies it (fido2.cose); 2.0 is the API used here.
        "fido2>=2.0,<3",
        "Pillow>=9.4",      # privacy zones' polygons, the notice sheet as PNG (9.4: Debian 12's)
        "reportlab>=4",     # the notice sheet as PDF
    ],
    extras_require={
        # On a Pi, in a venv with --system-site-packages (README): picamera2 and libcamera come
        # from Raspberry Pi OS (apt), whose simplejpeg is built against numpy 1; lgpio is the
        # pin factory the unit forces. No OpenCV: a USB webcam is read through PyAV.
        "pi": ["sounddevice>=0.4", "lgpio>=0.2", "numpy>=1.24,<2"],
        # setuptools: tests build the teacher's wheel without build isolation (no registry).
        "test": ["pytest>=7", "pytest-timeout>=2", "hypothesis>=6", "setuptools>=70.1",
                 "ruff>=0.6", "mypy>=1.10",
                 "pypdf>=4"],
    },
    entry_points={
        # The unit's commands, added to the one `classcam` script of classcam-teacher.
        "classcam.commands": ["unit = appliance.cli:add_commands"],
        # Hardware backends by name (`classcam run --hw pi`); classcam-sim registers `sim`.
        "classcam.hardware": ["pi = appliance.pi_hardware:make_pi_hardware"],
        # The PIN pad service and IT's commands for its keystore (its own user, systemd unit).
        "console_scripts": ["classcam-pinpad = pinpad.cli:main"],
    },
)
