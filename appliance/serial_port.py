"""The serial port of a USB PIN pad (`[pad] serial`), for `appliance.padlink.SerialPad`. Its own
module so that pyserial is imported only by a unit whose pad is on a serial line."""
from __future__ import annotations

import os

import serial


class NonBlockingSerial(serial.Serial):
    """A serial port whose `write` says when the port is full instead of trying again at
    once: pyserial's own loops without a pause while a non-blocking port is full (pyserial issue
    280), which would hold up the event loop for as long as the pad does not read. The
    transport buffers what did not fit and writes it when the port can take it."""

    def write(self, data) -> int:
        if not self.is_open:
            raise serial.PortNotOpenError()
        try:
            return os.write(self.fd, data)
        except (BlockingIOError, InterruptedError):
            raise  # the transport waits until the port is writable
        except OSError as e:
            raise serial.SerialException(f"write failed: {e}") from None
