"""`classcam led-off` (systemd's ExecStopPost): whatever the configuration holds, the recording
LED's line ends driven low, an output, and stays so after gpiozero's own clean-up at exit."""
from __future__ import annotations

import gpiozero
import gpiozero.devices
import pytest
from gpiozero.pins.mock import MockFactory

from appliance.cli import main
from led_indicator.off import DEFAULT_LED_PIN


@pytest.fixture
def factory():
    previous = gpiozero.Device.pin_factory
    factory = MockFactory()
    gpiozero.Device.pin_factory = factory
    yield factory
    factory.reset()
    gpiozero.Device.pin_factory = previous


def _lit_by_a_dead_daemon(factory, name: str):
    pin = factory.pin(name)
    pin.function = "output"
    pin.state = True
    return pin


def _exit_cleanup() -> None:
    """What gpiozero does at the process's exit (its atexit hook): close every device and
    every pin its factory made."""
    gpiozero.devices._devices_shutdown()


@pytest.mark.parametrize("text", [
    "this is [not toml",
    '[device]\nid = 7\n[gpio]\nrecording_led_pin = 27\n',  # valid TOML, invalid config
    "\xff\xfe broken bytes",
])
def test_led_off_with_a_broken_config_drives_the_default_pin_low_and_leaves_it_so(
        factory, tmp_path, capsys, text):
    config = tmp_path / "classcam.toml"
    config.write_bytes(text.encode("latin-1"))
    pin = _lit_by_a_dead_daemon(factory, DEFAULT_LED_PIN)
    assert main(["led-off", "--config", str(config)]) == 0
    assert (pin.function, pin.state) == ("output", False)
    _exit_cleanup()
    assert (pin.function, pin.state) == ("output", False)
    err = capsys.readouterr().err
    assert f"using the default pin {DEFAULT_LED_PIN}" in err and err.count("\n") == 1


def test_led_off_reads_the_pin_alone_from_an_otherwise_invalid_config(factory, tmp_path):
    config = tmp_path / "classcam.toml"
    # No device id, an unknown key: the daemon refuses this file; led-off needs only the pin.
    config.write_text('[gpio]\nrecording_led_pin = "GPIO22"\nnonsense = 1\n')
    pin = _lit_by_a_dead_daemon(factory, "GPIO22")
    default = _lit_by_a_dead_daemon(factory, DEFAULT_LED_PIN)
    assert main(["led-off", "--config", str(config)]) == 0
    _exit_cleanup()
    assert (pin.function, pin.state) == ("output", False)
    assert default.state is True  # another pin: not touched


def test_led_off_with_no_config_file_uses_the_default_pin(factory, tmp_path):
    pin = _lit_by_a_dead_daemon(factory, DEFAULT_LED_PIN)
    assert main(["led-off", "--config", str(tmp_path / "missing.toml")]) == 0
    _exit_cleanup()
    assert (pin.function, pin.state) == ("output", False)
