"""P9 on the Pi: nothing the daemon writes to stdout or stderr is timed by a lesson. Journal
lines are held to the health tick (tests/test_health_p9.py); here the tick is an hour away, so
any byte written from the press to the end of the stop would be something else leaking: a
library's own print (PortAudio's first use, alsa-lib, libcamera), a Python warning, a thread's
traceback. The unit plays its notices through a real sound stack (PulseAudio behind ALSA and
PortAudio), as on a Pi."""
from __future__ import annotations

import logging
import subprocess
import time

from appliance import journal
from hwsim.invariants import check_all
from tests.audio_pulse import pulse_server


def test_nothing_is_written_to_stdout_or_stderr_from_the_press_to_the_end_of_the_stop(
        lab, tmp_path, monkeypatch):
    with pulse_server(tmp_path, monkeypatch,
                      ["module-null-sink sink_name=room rate=44100 channels=1"],
                      {"classroom_speaker": "room"}):
        subprocess.run(["pactl", "set-default-sink", "room"], check=True)
        lab.settings["sim"] = {"speaker": "sounddevice"}
        lab.settings["audio"] = {"speaker": "classroom_speaker"}
        lab.settings["notice"] = {"languages": ["en"], "start_en": "Recording.",
                                  "stop_en": "Stopped."}
        lab.settings["health"] = {"period_s": 3600}
        lab.write_config()
        with lab.daemon() as unit:
            time.sleep(1.0)  # start-up's own lines (a start is not a lesson) are written by now
            before = lab.log_path.stat().st_size
            assert unit.lesson("t-evans", seconds=1.0)["ok"]
            deadline = time.monotonic() + 10
            while not [e for e in lab.timeline() if e["ev"] == "notice"
                       and e["label"] == "stop" and e["phase"] == "end"]:
                assert time.monotonic() < deadline, "the stop notice did not end"
                time.sleep(0.02)
            time.sleep(0.5)  # anything a library writes on its way out of the lesson
            after = lab.log_path.stat().st_size
            written = lab.log_path.read_bytes()[before:after].decode(errors="replace")
        assert written == ""
    events = lab.timeline()
    assert check_all(events) == []
    assert [e["label"] for e in events if e["ev"] == "notice" and e["phase"] == "end"] == [
        "start", "stop"]


def test_library_loggers_say_only_warnings_and_the_daemons_own_say_info():
    root = logging.getLogger()
    saved = root.handlers[:], root.level, {n: logging.getLogger(n).level
                                            for n in journal.OWN_LOGGERS}
    try:
        journal.setup()
        # picamera2 says "Camera started" / "Camera stopped" at INFO: when a lesson starts.
        for library in ("picamera2.picamera2", "picamera2", "urllib3.connectionpool", "paho"):
            assert not logging.getLogger(library).isEnabledFor(logging.INFO), library
            assert logging.getLogger(library).isEnabledFor(logging.WARNING), library
        for own in ("classcam", "health", "appliance.unit", "uploader.worker"):
            assert logging.getLogger(own).isEnabledFor(logging.INFO), own
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
