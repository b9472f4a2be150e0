"""A real Mosquitto for the health tests: TLS on a free loopback port, a test CA (hwsim's
`TestPki`), a password file made with `mosquitto_passwd` and the ACL the README gives IT.

    broker = Broker.start(directory, units=["sim-unit-1"])
    broker.port, broker.ca, broker.password("sim-unit-1")
    broker.client("it")               # a connected paho client with IT's account
    broker.stop()                      # also what the fixture does at teardown

Two listeners: `port` takes a username and password, `cert_port` a client certificate whose
common name is the username. The ACL is `ACL` below, word for word as in the README.
"""
from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties

from hwsim.pki import DEVICE, Credential, TestPki

# Each unit publishes only under classcam/<its username>/ and reads nothing; IT's account reads
# the health topic of every unit and writes nothing. Anything not granted is denied.
ACL = """\
user it
topic read classcam/+/health

pattern write classcam/%u/#
"""
IT_USER = "it"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
ADMIN_USER = "test-admin"  # the tests' own account: may publish anywhere, to attack the unit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Broker:
    """A running Mosquitto and the files it was started with."""

    directory: Path
    pki: TestPki
    port: int
    cert_port: int
    passwords: dict[str, str]
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "mosquitto.log"

    @classmethod
    def start(cls, directory: Path, units: list[str], pki: TestPki | None = None) -> Broker:
        """Write the config, password file and ACL for IT and `units`, and start Mosquitto."""
        directory.mkdir(parents=True, exist_ok=True)
        pki = pki or TestPki.create(directory / "pki")
        users = [IT_USER, ADMIN_USER, *units]
        broker = cls(directory, pki, free_port(), free_port(),
                     {u: secrets.token_urlsafe(12) for u in users})
        passwd = directory / "passwd"
        passwd.touch(mode=0o600)
        for user, password in broker.passwords.items():
            subprocess.run(["mosquitto_passwd", "-b", str(passwd), user, password], check=True,
                           capture_output=True, timeout=30)
        (directory / "acl").write_text(ACL + f"\nuser {ADMIN_USER}\ntopic readwrite #\n")
        (directory / "mosquitto.conf").write_text(broker._config())
        broker.resume()
        return broker

    def _config(self) -> str:
        tls = (f"cafile {self.pki.ca_cert}\ncertfile {self.pki.server.cert}\n"
               f"keyfile {self.pki.server.key}\ntls_version tlsv1.2\n")
        return (
            "per_listener_settings false\n"
            "allow_anonymous false\n"
            f"password_file {self.directory / 'passwd'}\n"
            f"acl_file {self.directory / 'acl'}\n"
            "persistence false\n"
            "user root\n"   # started as root, Mosquitto would become `mosquitto` and lose the keys
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\nlog_type subscribe\n"
            f"listener {self.port} 127.0.0.1\n{tls}require_certificate false\n"
            f"listener {self.cert_port} 127.0.0.1\n{tls}require_certificate true\n"
            "use_identity_as_username true\n")

    def resume(self, timeout: float = 10.0) -> None:
        """Start (or start again, on the same ports) and wait until it accepts connections."""
        assert self.proc is None, "already running"
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.directory / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n"
                                   f"{self.log.read_text() if self.log.exists() else ''}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                socket.create_connection(("127.0.0.1", self.cert_port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("mosquitto did not start listening") from None
                time.sleep(0.05)

    def stop(self) -> None:
        """Stop Mosquitto (SIGTERM, then SIGKILL); retained messages are lost (no persistence)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def ca(self) -> Path:
        return self.pki.ca_cert

    def password(self, user: str) -> str:
        return self.passwords[user]

    def password_file(self, user: str) -> Path:
        path = self.directory / f"{user}.password"
        path.write_text(self.passwords[user] + "\n")
        path.chmod(0o600)
        return path

    def device_credential(self, device_id: str) -> Credential:
        """A client certificate whose common name is `device_id` (for `cert_port`)."""
        return self.pki.issue(device_id, DEVICE, name=f"mqtt-{device_id}")

    def unit_settings(self, device_id: str, period_s: float) -> dict:
        """The `[health]` table of a unit that logs in with its password."""
        return {"period_s": period_s, "broker": "127.0.0.1", "port": self.port,
                "ca_bundle": str(self.ca), "password_file": str(self.password_file(device_id))}

    def client(self, user: str | None = None, credential: Credential | None = None,
               client_id: str = "") -> Client:
        """A connected MQTT v5 client: `user` with its password on `port`, or `credential`
        on `cert_port`."""
        return Client.connect(self, user, credential, client_id)


class Client:
    """A paho client for tests: records what it receives and what the broker answered."""

    def __init__(self, paho: mqtt.Client):
        self.paho = paho
        self.messages: list[tuple[float, mqtt.MQTTMessage]] = []
        self.subacks: list[list[int]] = []
        self.pubacks: dict[int, int] = {}
        self.connected = threading.Event()
        self.connect_reason: int | None = None
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, broker: Broker, user: str | None, credential: Credential | None,
                client_id: str, timeout: float = 10.0) -> Client:
        paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=mqtt.MQTTv5)
        client = cls(paho)
        if credential is not None:
            paho.tls_set(ca_certs=str(broker.ca), certfile=str(credential.cert),
                         keyfile=str(credential.key))
            port = broker.cert_port
        else:
            paho.tls_set(ca_certs=str(broker.ca))
            paho.username_pw_set(user, broker.password(user))
            port = broker.port
        paho.on_connect = client._on_connect
        paho.on_message = client._on_message
        paho.on_subscribe = client._on_subscribe
        paho.on_publish = client._on_publish
        paho.connect("127.0.0.1", port, keepalive=30)
        paho.loop_start()
        if not client.connected.wait(timeout):
            paho.loop_stop()
            raise TimeoutError("test client could not connect")
        return client

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connect_reason = reason_code.value
        self.connected.set()

    def _on_message(self, client, userdata, message) -> None:
        with self._lock:
            self.messages.append((time.monotonic(), message))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subacks.append([r.value for r in reason_codes])

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.pubacks[mid] = reason_code.value

    def subscribe(self, topic: str, timeout: float = 5.0) -> list[int]:
        """Subscribe and return the broker's reason codes (>= 0x80 is a refusal)."""
        before = len(self.subacks)
        self.paho.subscribe(topic, qos=1)
        wait_for(lambda: len(self.subacks) > before, timeout, f"no SUBACK for {topic}")
        return self.subacks[before]

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1,
                properties: Properties | None = None, wait: bool = True) -> int | None:
        """Publish and return the PUBACK reason code (QoS 1), or None (QoS 0, or not `wait`)."""
        info = self.paho.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0 or not wait:
            return None
        info.wait_for_publish(5)
        wait_for(lambda: info.mid in self.pubacks, 5, f"no PUBACK for {topic}")
        return self.pubacks[info.mid]

    def received(self, topic: str | None = None) -> list[tuple[float, mqtt.MQTTMessage]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if topic is None or m.topic == topic]

    def close(self) -> None:
        self.paho.disconnect()
        self.paho.loop_stop()


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


def mosquitto_available() -> bool:
    return Path(MOSQUITTO).exists() and shutil.which("mosquitto_passwd") is not None
