"""Simulated GPIO: gpiozero's MockFactory, with pins that report every change to the timeline and
can be made to fail.

    factory = SimPinFactory(timeline, faults, labels={"GPIO27": "recording_led"})
    led = gpiozero.LED("GPIO27", pin_factory=factory)
"""
from __future__ import annotations

from gpiozero.exc import PinError
from gpiozero.pins.mock import MockFactory, MockPWMPin

from hwsim.faults import Faults
from hwsim.timeline import Timeline


class TimelinePin(MockPWMPin):
    """A mock pin (PWM-capable, so RGB LEDs work) that writes each state change to the timeline.
    With the `led` fault on, the recording LED's pin refuses to be driven."""

    def _set_state(self, value):
        factory: SimPinFactory = self._factory
        label = factory.labels.get(self.info.name, self.info.name)
        if label == "recording_led" and "led" in factory.faults:
            raise PinError(f"{self.info.name}: simulated LED driver failure")
        super()._set_state(value)

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed:
            factory: SimPinFactory = self._factory
            factory.timeline("pin", name=factory.labels.get(self.info.name, self.info.name),
                             value=float(value))
        return changed


class SimPinFactory(MockFactory):
    """MockFactory whose pins are `TimelinePin`s."""

    def __init__(self, timeline: Timeline, faults: Faults, labels: dict[str, str]):
        super().__init__(pin_class=TimelinePin)
        self.timeline = timeline
        self.faults = faults
        self.labels = labels
