"""`classcam fleet`: IT's view of every unit, from the retained health messages.

    classcam fleet --broker mqtt.school.example --ca ca.pem --username it --password-file pw
    sim-unit-1  ok
    sim-unit-2  fault: speaker: speaker: simulated amplifier failure
    sim-unit-3  offline since 2026-11-26T09:14:03Z

One line per unit, sorted by device id; `--json` prints the same as a JSON list for monitoring
systems. Exit status 0 when every unit is ok, 1 when any is in fault, offline or silent for three
periods, 2 when the broker cannot be reached. Read-only: it subscribes to `classcam/+/health`
and publishes nothing (IT's account may not, see the README's ACL).
"""
from __future__ import annotations

import datetime
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from appliance.health.publisher import EXPIRY_S
from appliance.health.report import decode

TOPIC = "classcam/+/health"
STALE_PERIODS = 3


class FleetError(Exception):
    """The broker could not be read; the message is one line."""


@dataclass
class UnitLine:
    """What `classcam fleet` says about one unit."""

    device: str
    status: str                      # "ok", "fault", "offline", "stale" or "unreadable"
    failing: dict[str, str] = field(default_factory=dict)  # check -> reason
    since: str | None = None         # when the unit went offline (or was last heard, stale)
    report: dict | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def text(self) -> str:
        if self.status == "ok":
            return f"{self.device}  ok"
        if self.status == "fault":
            return f"{self.device}  fault: " + "; ".join(
                f"{name}: {reason.removeprefix('fault: ')}" for name, reason in self.failing.items())
        if self.status == "offline":
            return f"{self.device}  offline since {self.since or 'an unknown time'}"
        if self.status == "stale":
            return f"{self.device}  silent: last health at {self.since}"
        return f"{self.device}  unreadable health message: {self.failing.get('message', '')}"


def read_fleet(host: str, port: int, ca: Path | None, username: str | None = None,
               password: str | None = None, cert: Path | None = None, key: Path | None = None,
               wait_s: float = 5.0, quiet_s: float = 0.5) -> list[UnitLine]:
    """Subscribe, collect the retained messages (until `quiet_s` passes with no new one, at most
    `wait_s`), and say what each unit's says."""
    received: dict[str, tuple[float, bytes, int | None]] = {}
    lock = threading.Lock()
    subscribed = threading.Event()
    connected = threading.Event()
    refused: list[str] = []
    last = [time.monotonic()]

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
            connected.set()
            return
        connected.set()
        client.subscribe(TOPIC, qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        if any(r.is_failure for r in reason_codes):
            refused.append(f"subscription refused: {reason_codes[0]}")
        subscribed.set()

    def on_message(client, userdata, message):
        device = message.topic.split("/")[1]
        left = getattr(message.properties, "MessageExpiryInterval", None)
        with lock:
            received[device] = (time.time(), message.payload, left)
            last[0] = time.monotonic()

    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca) if ca else None, certfile=str(cert) if cert else None,
                   keyfile=str(key) if key else None)
    if username:
        client.username_pw_set(username, password)
    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise FleetError(f"cannot reach the broker at {host}:{port}: {e}") from None
    client.loop_start()
    try:
        if not connected.wait(wait_s) or refused:
            raise FleetError(f"the broker at {host}:{port} did not let us in: "
                             f"{refused[0] if refused else 'no answer'}")
        if not subscribed.wait(wait_s) or refused:
            raise FleetError(refused[0] if refused else "no answer to the subscription")
        deadline = time.monotonic() + wait_s
        last[0] = time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - last[0] < quiet_s:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    with lock:
        return [_line(device, *received[device]) for device in sorted(received)]


def _line(device: str, heard: float, payload: bytes, left: int | None) -> UnitLine:
    try:
        fields = decode(payload)
    except ValueError as e:
        return UnitLine(device, "unreadable", {"message": str(e)})
    age = EXPIRY_S - left if left is not None and left <= EXPIRY_S else None
    since = _iso(heard - age) if age is not None else None
    if fields["status"] == "offline":
        return UnitLine(device, "offline", since=since, report=fields)
    period = float(fields.get("period_s") or 0)
    if age is not None and period and age > STALE_PERIODS * period:
        return UnitLine(device, "stale", since=since, report=fields)
    failing = {name: text for name, text in fields["checks"].items() if text != "ok"}
    return UnitLine(device, "fault" if failing or fields["status"] != "ok" else "ok", failing,
                    report=fields)


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(int(wall), datetime.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def as_json(lines: list[UnitLine]) -> str:
    return json.dumps([{k: v for k, v in asdict(line).items()} | {"ok": line.ok}
                       for line in lines], indent=2)
