"""P9 and P1 over MQTT: nothing that arrives on the broker reaches the unit, and nothing the unit
says (health messages, journal lines) tells who recorded or when."""
from __future__ import annotations

import re
import statistics
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hwsim.invariants import check_all, device_intervals, led_intervals
from appliance.health.report import SIZE
from tests.health_lab import it_watching, timed_daemon, wait_until
from tests.mqtt_broker import ADMIN_USER

PREFIX = "classcam/sim-unit-1"
ATTACK_TOPICS = [f"{PREFIX}/{leaf}" for leaf in (
    "health", "cmd", "command", "control", "start", "stop", "pause", "discard", "config",
    "set", "record", "arm", "token", "led", "pad", "health/set", "a/b/c")] + [
    "classcam/all/cmd", "classcam", "cmd", "everything", "sim-unit-1/cmd"]
PAYLOADS = [b'{"cmd":"start"}', b'{"type":"arm"}', b'{"type":"stop"}', b'{"cmd":"discard"}',
            b'{"type":"token","token":"x.y.z"}', b'{"cmd":"pause"}', b'{"recording":{"max_minutes":1}}',
            b"start", b"\x00\xff\xfe", b"{", b"", b"null", b"[1,2,3]" * 1000]


def _blast(admin) -> int:
    """Every payload on every topic, retained and not, QoS 0 and 1; returns how many."""
    sent = 0
    for topic in ATTACK_TOPICS:
        for payload in PAYLOADS:
            for retain, qos in ((False, 0), (True, 1)):
                props = Properties(PacketTypes.PUBLISH)
                props.ResponseTopic = f"{PREFIX}/reply"
                admin.publish(topic, payload, retain=retain, qos=qos, properties=props,
                              wait=False)
                sent += 1
    # Then one that is waited for: the broker has taken (and passed on) all before it.
    assert admin.publish(f"{PREFIX}/last", b"{}", qos=1) < 0x80
    return sent


def _changes(events: list[dict]) -> list[dict]:
    return [e for e in events if e["ev"] in ("state", "device", "press", "challenge", "token",
                                             "notice", "stop_requested", "discarded")]


def test_messages_on_every_topic_change_nothing_idle_armed_or_recording(lab, broker):
    lab.settings["health"] = broker.unit_settings("sim-unit-1", 0.5)
    lab.write_config()
    with lab.daemon() as unit:
        it = it_watching(broker)
        wait_until(lambda: it.received(f"{PREFIX}/health"), 10, "no health")
        admin = broker.client(ADMIN_USER)
        # Idle.
        before = len(lab.timeline())
        assert _blast(admin) > 500
        time.sleep(1.0)
        assert unit.state() == "idle" and _changes(lab.timeline()[before:]) == []
        # Armed: still armed, still waiting for the teacher's token, nothing opened.
        unit.control("press")
        unit.wait_state("armed")
        before = len(lab.timeline())
        _blast(admin)
        time.sleep(1.0)
        assert unit.state() == "armed" and _changes(lab.timeline()[before:]) == []
        unit.control("press")
        unit.wait_state("idle")
        # Recording: nothing stops, pauses or discards it.
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("recording")
        before = len(lab.timeline())
        _blast(admin)
        time.sleep(1.0)
        assert unit.state() == "recording"
        assert [e for e in _changes(lab.timeline()[before:])] == []
        assert unit.control("status")["open"] == ["camera", "microphone"]
        unit.control("press")
        unit.wait_state("idle")
        admin.close()
        it.close()
    events = lab.timeline()
    assert len(device_intervals(events)) == 2 and check_all(events) == []
    # The unit never asked the broker for anything: no SUBSCRIBE from its client id.
    subscribed = [l for l in broker.log.read_text().splitlines()
                  if re.search(r": classcam-sim-unit-1 \d ", l)]
    assert subscribed == []


def _phase_clock(it, topic: str, period: float):
    """The unit's ticks as IT sees them: the next tick's time after `now`."""
    first = wait_until(lambda: it.received(topic), 15, "no health")[0][0]

    def next_tick(now: float) -> float:
        return first + (int((now - first) / period) + 1) * period
    return next_tick


def test_a_school_day_says_nothing_of_who_or_when_and_looks_like_a_day_without_lessons(
        lab_template, short_dir, broker):
    period = 4.0
    day = lab_template.copy(short_dir / "day")
    quiet = lab_template.copy(short_dir / "quiet")
    for lab, device in ((day, "sim-unit-1"), (quiet, "sim-unit-2")):
        lab.settings["health"] = broker.unit_settings(device, period)
        lab.settings["device"] = {"id": device}
    it = it_watching(broker)
    with day.account() as server, quiet.account(), timed_daemon(day) as (unit, tap), \
            timed_daemon(quiet) as (_, quiet_tap):
        next_tick = _phase_clock(it, f"{PREFIX}/health", period)
        started = time.monotonic()

        def mid_period(offset: float = 0.3) -> None:
            """Wait until `offset` s before the middle of a period: what follows (the press, the
            PIN, the LED, the devices) lands away from both of the period's ticks."""
            now = time.monotonic()
            target = next_tick(now) - period / 2 - offset
            time.sleep(target - now if target > now else target + period - now)

        def lesson() -> None:
            mid_period(0.6)
            unit.control("press")
            unit.wait_state("armed")
            assert unit.control("pin", teacher="t-evans", pin="432187")["result"]["ok"]
            unit.wait_state("recording")
            mid_period(0.2)
            unit.control("press")
            unit.wait_state("idle")

        lesson()
        mid_period()
        server.faults.set("refuse")          # the school's server goes away ...
        lesson()                             # ... for a whole lesson
        mid_period()
        server.faults.clear("refuse")
        mid_period()
        unit.control("fault", name="speaker", on=True)
        mid_period(0.6)
        unit.control("press")                # the notice cannot play: no recording
        unit.wait_state("armed")
        unit.control("pin", teacher="t-evans", pin="432187")
        unit.wait_state("idle")
        mid_period()
        unit.control("fault", name="speaker", on=False)
        lesson()
        unit.wait_uploaded(60)
        wait_until(lambda: next_tick(time.monotonic()) - started > 13 * period, 60, "day")
        time.sleep(period)  # one more tick after everything
        ended = time.monotonic()
        recordings = list(server.stored("t-evans"))
        teacher_ids = list(day.teachers)
    it.close()
    events = day.timeline()
    assert len(recordings) == 3 and check_all(events) == []

    # Starts and stops, as the simulator recorded them.
    moments = [t for on, off in led_intervals(events) for t in (on, off)]
    moments += [t for _, opened, closed in device_intervals(events) for t in (opened, closed)]
    moments += [e["t"] for e in events if e["ev"] in ("state", "token", "press")]
    assert len(moments) > 20

    messages = {device: [(t, m.payload) for t, m in it.received(f"classcam/{device}/health")
                         if started <= t <= ended]
                for device in ("sim-unit-1", "sim-unit-2")}
    said = [p.decode() for _, p in messages["sim-unit-1"]] + [line for _, line in tap.lines]
    # Who: no teacher, no recording.
    for text in said:
        for secret in teacher_ids + recordings:
            assert secret not in text, (secret, text)
        assert "recording" not in text.lower() or "recordings are kept" in text, text
    # When: every message and every journal line on the fixed period, nowhere near a start or
    # a stop, and nothing else.
    times = [t for t, _ in messages["sim-unit-1"]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(abs(g - period) < 0.35 for g in gaps), gaps
    line_times = [t for t, _ in tap.lines if t > started]
    assert line_times, "no journal line all day (the outage and the speaker fault are missing)"
    for t in line_times:
        assert min(abs(t - m) for m in times) < 0.35, (t, times)
    for t in times + line_times:
        nearest = min(moments, key=lambda m: abs(m - t))
        assert abs(nearest - t) > 1.0, (t, nearest)
    journal = "\n".join(line for _, line in tap.lines)
    assert "fault: upload: cannot reach the server" in journal and "upload: working again" in journal
    assert "fault: speaker:" in journal
    # The same day without lessons looks the same from the outside: as many messages, all of
    # the one size.
    counts = {device: len(m) for device, m in messages.items()}
    assert abs(counts["sim-unit-1"] - counts["sim-unit-2"]) <= 1, counts
    assert counts["sim-unit-1"] >= 13
    sizes = {device: {len(p) for _, p in m} for device, m in messages.items()}
    assert sizes == {"sim-unit-1": {SIZE}, "sim-unit-2": {SIZE}}
    quiet_times = [t for t, _ in messages["sim-unit-2"]]
    quiet_gaps = [b - a for a, b in zip(quiet_times, quiet_times[1:])]
    assert all(abs(g - period) < 0.35 for g in quiet_gaps), quiet_gaps
    assert abs(statistics.mean(gaps) - statistics.mean(quiet_gaps)) < 0.1
