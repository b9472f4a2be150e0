"""Health over MQTT v5 against a real Mosquitto (TLS, passwords or client certificates, the
README's ACL): the retained message, the last will, a broker outage, and what a unit's
credentials cannot do."""
from __future__ import annotations

import json
import time

from hwsim.invariants import check_all, device_intervals
from appliance.health.report import CHECKS, SIZE
from tests.health_lab import it_watching, wait_until
from tests.mqtt_broker import ADMIN_USER

PERIOD = 0.5
TOPIC = "classcam/sim-unit-1/health"


def _health(client, topic=TOPIC) -> list[dict]:
    return [json.loads(m.payload) for _, m in client.received(topic)]


def test_retained_health_appears_with_every_check_and_the_last_will_after_sigkill(lab, broker):
    lab.settings["health"] = broker.unit_settings("sim-unit-1", PERIOD)
    with lab.account(), lab.daemon() as unit:
        it = it_watching(broker)
        wait_until(lambda: it.received(TOPIC), 10, "no health message")
        it.close()
        # A reader that comes later still gets it: it is retained.
        later = it_watching(broker)
        (_, first), *_ = wait_until(lambda: later.received(TOPIC), 5, "not retained")
        assert first.retain and len(first.payload) == SIZE
        report = json.loads(first.payload)
        assert report["device"] == "sim-unit-1" and report["status"] == "ok", report
        assert report["checks"] == {name: "ok" for name in CHECKS}
        assert report["period_s"] == PERIOD and report["backlog"] == "none"
        assert set(report) == {"v", "device", "status", "version", "period_s", "at", "uptime_s",
                               "disk_free_mb", "backlog", "last_server_contact", "checks"}
        unit.kill()
        (_, will), = wait_until(lambda: [(t, m) for t, m in later.received(TOPIC)
                                         if json.loads(m.payload)["status"] == "offline"],
                                10, "no last will after SIGKILL")
        assert len(will.payload) == SIZE
        later.close()
    # The will is retained too, for whoever looks next.
    look = it_watching(broker)
    (_, retained), = wait_until(lambda: look.received(TOPIC), 5, "will not retained")
    assert json.loads(retained.payload)["status"] == "offline" and retained.retain
    look.close()


def test_a_unit_can_log_in_with_a_client_certificate(lab, broker):
    device = broker.device_credential("sim-unit-1")
    lab.settings["health"] = {"period_s": PERIOD, "broker": "127.0.0.1",
                              "port": broker.cert_port, "ca_bundle": str(broker.ca),
                              "client_cert": str(device.cert), "client_key": str(device.key)}
    lab.write_config()
    with lab.daemon():
        it = it_watching(broker)
        wait_until(lambda: _health(it), 10, "no health message over the certificate login")
        it.close()


def test_a_broker_outage_is_survived_logged_once_and_no_recording_is_affected(lab, broker):
    lab.settings["health"] = broker.unit_settings("sim-unit-1", PERIOD)
    lab.write_config()
    with lab.account() as server, lab.daemon() as unit:
        it = it_watching(broker)
        wait_until(lambda: _health(it), 10, "no health before the outage")
        it.close()
        broker.stop()
        # A whole lesson while the broker is away, over several of the unit's retries.
        assert unit.lesson("t-evans", seconds=3.0)["ok"]
        time.sleep(2.0)
        unit.wait_uploaded(30)
        broker.resume()
        it = it_watching(broker)
        report = wait_until(lambda: _health(it), 20, "health did not come back")[-1]
        assert report["status"] == "ok" and report["backlog"] == "none", report
        it.close()
        unit.wait_journal("MQTT broker reachable again")
        assert server.stored("t-evans")
    journal = lab.journal()
    assert journal.count("cannot reach the MQTT broker") == 1, journal
    events = lab.timeline()
    assert check_all(events) == [] and len(device_intervals(events)) == 2


def test_a_units_credentials_cannot_publish_elsewhere_nor_read_anything(broker):
    unit = broker.client("sim-unit-1", client_id="classcam-sim-unit-1")
    other = broker.client("sim-unit-2")
    it = it_watching(broker)
    # Its own prefix: allowed.
    assert unit.publish(TOPIC, b'{"v":1}', retain=True) == 0
    # Another unit's prefix, IT's topic space, the root: refused (0x87 not authorised).
    for topic in ("classcam/sim-unit-2/health", "classcam/sim-unit-2/x", "classcam/it/health",
                  "elsewhere"):
        assert unit.publish(topic, b'{"v":1,"status":"ok"}', retain=True) == 0x87, topic
    # Reading: Mosquitto grants the subscription but delivers nothing the ACL does not allow.
    for topic in ("#", "classcam/+/health", TOPIC, "classcam/sim-unit-1/#"):
        unit.subscribe(topic)
    admin = broker.client(ADMIN_USER)
    admin.publish(TOPIC, b"from the admin", retain=True)
    admin.publish("classcam/sim-unit-1/cmd", b'{"cmd":"start"}')
    other.publish("classcam/sim-unit-2/health", b'{"v":1}', retain=True)
    wait_until(lambda: len(it.received()) >= 3, 5, "IT did not see the messages")
    time.sleep(0.5)
    assert unit.received() == []
    # IT reads, and cannot write.
    assert {m.topic for _, m in it.received()} == {TOPIC, "classcam/sim-unit-2/health"}
    assert it.publish(TOPIC, b"forged", retain=True) == 0x87
    for client in (unit, other, it, admin):
        client.close()


def test_the_server_is_probed_on_the_period_with_nothing_to_send_and_its_outage_reported(
        lab, broker):
    lab.settings["health"] = broker.unit_settings("sim-unit-1", PERIOD)
    with lab.account() as server, lab.daemon() as unit:
        it = it_watching(broker)
        wait_until(lambda: _health(it), 10, "no health")
        probes = wait_until(lambda: server.probes if len(server.probes) >= 6 else None, 10,
                            "no probes")
        gaps = [b - a for a, b in zip(probes, probes[1:])]
        assert all(abs(g - PERIOD) < 0.2 for g in gaps), gaps
        server.faults.set("refuse")   # nothing is waiting to be sent: only the probe can tell
        down = wait_until(lambda: [r for r in _health(it)
                                   if r["checks"]["server"].startswith("fault")], 10,
                          "the outage was not reported")[0]
        assert down["checks"]["server"].startswith("fault: cannot reach the server")
        assert down["status"] == "fault"
        unit.wait_journal("fault: upload: cannot reach the server")
        server.faults.clear("refuse")
        wait_until(lambda: _health(it)[-1]["checks"]["server"] == "ok", 10, "no recovery")
        unit.wait_journal("upload: working again")
        it.close()
    assert lab.spooled() == [] and server.requests_log == []  # no upload was ever made
