"""Shared fixtures: a simulated classroom (`lab`) and the real daemon running on it (`unit`)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from hwsim.lab import Lab


@pytest.fixture
def short_dir():
    # Unix socket paths must stay under 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="cc-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def lab_template(tmp_path_factory) -> Lab:
    """Two teachers' keys, made once per test session (scrypt makes this slow)."""
    return Lab.create(tmp_path_factory.mktemp("lab-template"),
                      teachers={"t-evans": "432187", "t-jones": "987654"})


@pytest.fixture
def lab(lab_template, short_dir) -> Lab:
    """A classroom with two enrolled teachers and a unit with fresh state."""
    return lab_template.copy(short_dir)


@pytest.fixture(params=["libx264", "picamera2"])
def lab_on_each_encoder(lab_template, short_dir, request) -> Lab:
    """The classroom, its camera's frames encoded by the chain (libx264, as a USB webcam's) or
    by the camera itself through the chain's Output (as the Pi camera's, by picamera2). A test
    module runs on both by making its `lab` fixture return this one."""
    lab = lab_template.copy(short_dir)
    lab.settings["sim"] = {"encoder": request.param}
    lab.write_config()
    return lab


@pytest.fixture
def unit(lab):
    """The real daemon, simulated hardware, running on `lab`."""
    with lab.daemon() as running:
        yield running


# The MQTT broker fixture (a real Mosquitto with TLS and the ACL), for the health tests.
pytest_plugins = ["tests.health_lab"]
