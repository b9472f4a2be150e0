"""`classcam zones preview`: IT asks the running daemon (over the pad link's socket) for one
frame with the privacy zones filled. Nothing opens before a teacher's token; the LED is lit and
the notice played before the camera (alone) opens and goes dark after it closes; the PNG is
written where IT said, mode 0600, and shows every zone at the fill."""
from __future__ import annotations

import stat
import subprocess
import sys
import time

import av
import cv2
import numpy as np

from capture.zones import FILL_C, FILL_Y, MACROBLOCK, Zone
from hwsim.invariants import check_all, device_intervals, led_intervals
from tests.media import spool_contents
from tests.padclient import PadClient
from tests.test_zones_fill import centres_inside

ZONES = (Zone(rect=(0.05, 0.55, 0.3, 0.95)),
         Zone(polygon=((0.6, 0.22), (0.97, 0.33), (0.71, 0.85))))
WIDTH, HEIGHT = 320, 240


def _fill_bgr() -> np.ndarray:
    """The fill's colour as PyAV turns yuv420p into BGR (as the preview does)."""
    planes = np.empty((HEIGHT * 3 // 2, WIDTH), np.uint8)
    planes[:HEIGHT], planes[HEIGHT:] = FILL_Y, FILL_C
    frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
    return frame.to_ndarray(format="bgr24")[HEIGHT // 2, WIDTH // 2].astype(int)


def _cli(lab, out) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "appliance.cli", "zones", "preview",
                             "--config", str(lab.config_path), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_preview_is_one_zoned_frame_taken_only_on_a_token_with_the_led_lit(lab, tmp_path):
    lab.settings["capture"] = {"width": WIDTH, "height": HEIGHT}
    lab.settings["privacy"] = {"zones": [
        {"rect": list(ZONES[0].rect or ())},
        {"polygon": [list(p) for p in ZONES[1].polygon or ()]}]}
    lab.write_config()
    out = tmp_path / "zones.png"
    with lab.daemon() as unit:
        cli = _cli(lab, out)
        try:
            unit.wait_state("armed")
            time.sleep(0.3)  # armed, waiting for a teacher: nothing may open meanwhile
            assert not [e for e in lab.timeline() if e["ev"] in ("device", "frame")]
            result = unit.control("pin", teacher="t-evans", pin="432187")["result"]
            assert result["ok"] and result["reason"] == "zones preview"
            stdout, stderr = cli.communicate(timeout=120)
        finally:
            if cli.poll() is None:
                cli.kill()
        assert cli.returncode == 0, stderr
        assert stdout.strip() == str(out)
        unit.wait_state("idle")
    events = lab.timeline()
    assert check_all(events) == []
    # The camera alone, once, for one frame; the LED lit around it, and only then.
    ((device, opened, closed),) = device_intervals(events)
    assert device == "camera"
    assert len([e for e in events if e["ev"] == "frame"]) == 1
    ((on, off),) = led_intervals(events)
    assert on < opened and closed <= off
    notices = [e for e in events if e["ev"] == "notice" and e["label"] == "start"]
    assert notices and all(on < e["t"] < opened for e in notices)
    # The PNG: here, the caller's, 0600; nothing of it in the spool.
    info = out.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert spool_contents(lab) == []
    image = cv2.imread(str(out))
    assert image.shape == (HEIGHT, WIDTH, 3)
    fill = _fill_bgr()
    kernel = np.ones((2 * MACROBLOCK + 1, 2 * MACROBLOCK + 1), np.uint8)
    inside_any = np.zeros((HEIGHT, WIDTH), bool)
    for zone in ZONES:
        inside = centres_inside(zone, WIDTH, HEIGHT)
        inside_any |= inside
        deep = cv2.erode(inside.astype(np.uint8), kernel).astype(bool)
        assert deep.sum() > 0.2 * inside.sum()
        assert np.abs(image[deep].astype(int) - fill).max() <= 2
    # Beside the zones the camera's picture is there, not the fill.
    assert np.abs(image[~inside_any].astype(int) - fill).max() > 30


def test_a_preview_nobody_authorises_opens_nothing_and_says_why(lab_template, short_dir,
                                                                tmp_path):
    lab = lab_template.copy(short_dir, recording={"arm_timeout_s": 1})
    out = tmp_path / "zones.png"
    with lab.daemon() as unit:
        cli = _cli(lab, out)
        stdout, stderr = cli.communicate(timeout=60)
        assert unit.state() == "idle"
    assert cli.returncode != 0 and "no token came" in stderr
    assert not out.exists()
    assert not [e for e in lab.timeline() if e["ev"] in ("device", "frame")]


def test_preview_while_recording_is_refused(unit, lab):
    unit.control("press")
    unit.wait_state("armed")
    assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
    unit.wait_state("recording")
    pad = PadClient(lab.pad_socket)
    try:
        pad.send({"type": "preview"})
        assert pad.receive("result") == {"type": "result", "ok": False,
                                         "reason": "busy: recording"}
    finally:
        pad.close()
    unit.control("press")
    unit.wait_state("idle")
