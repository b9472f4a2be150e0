"""`classcam led-off`: darken the recording LED after the daemon has gone (systemd's
ExecStopPost), however it went, and however broken the configuration is.

    pin, why = led_pin(Path("/etc/classcam/classcam.toml"))   # why: set when the default is used
    leave_low(pin)

Only `[gpio] recording_led_pin` is read from the configuration, with tomllib and nothing else:
the configuration may be what stopped the daemon, and the LED must go dark all the same (P2). A
file that cannot be read or parsed, or a pin that is not a string, gives the documented default.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import gpiozero

# The recording LED's pin when the configuration does not name one (README, "Wiring").
DEFAULT_LED_PIN = "GPIO27"


def led_pin(config_path: Path) -> tuple[str, str | None]:
    """The recording LED's pin from `config_path`, and None; or the default pin and why."""
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except OSError as e:
        return DEFAULT_LED_PIN, f"cannot read {config_path}: {e.strerror}"
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        return DEFAULT_LED_PIN, f"{config_path} is not valid TOML: {e}"
    gpio = raw.get("gpio", {})
    pin = gpio.get("recording_led_pin", DEFAULT_LED_PIN) if isinstance(gpio, dict) else None
    if not isinstance(pin, str):
        return DEFAULT_LED_PIN, f"{config_path}: gpio.recording_led_pin is not a pin name"
    return pin, None


def leave_low(pin_name: str, factory: gpiozero.Factory | None = None) -> None:
    """Drive `pin_name` low as an output and leave it so when this process exits.

    Through a gpiozero pin rather than a device: closing a device closes its pin, and gpiozero
    closes every pin its factory made at exit, and a closed pin is an input (`LGPIOPin.close`
    claims the line as an input with no pull, floating; `MockPin.close` likewise). So the pin
    is taken out of the factory once driven: on a Pi, lgpio's `gpiochip_close` at exit then
    frees the line as it is, an output driven low, and the pull-down on the LED's line
    (README, "Wiring") holds it low should the line ever float."""
    factory = factory or gpiozero.Device.pin_factory or gpiozero.Device._default_pin_factory()
    gpiozero.Device.pin_factory = factory
    pin = factory.pin(pin_name)
    pin.function = "output"
    pin.state = False
    if pin.state:
        raise OSError(f"{pin_name} does not read back low")
    factory.pins.pop(pin.info, None)  # not closed by the factory, so not made an input
