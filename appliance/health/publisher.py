"""Retained health on `classcam/<device-id>/health` over MQTT v5 with TLS (paho-mqtt 2.x).

    publisher = HealthPublisher(config.health, device_id, version)
    publisher.start()                 # connects in paho's own thread, retrying with backoff
    publisher.publish(report.encode())  # on the health tick only; dropped while disconnected
    publisher.stop()                  # the broker publishes the last will `offline`

The client subscribes to nothing, and has no message callback: nothing that arrives over MQTT can
reach the unit, let alone start, stop or reconfigure a recording (P1). A publish happens only when
the health service calls `publish` on its tick, at QoS 0: nothing is queued while the broker is
away and sent later at a moment of its own. A lost connection is logged once, not per retry;
the unit records and uploads as ever.

Both the health message and the last will carry a Message Expiry Interval of EXPIRY_S: the broker
hands a retained message out with what is left of it, so a reader can tell how old it is
(`classcam fleet` shows "offline since" from it) without the unit saying when anything happened.
"""
from __future__ import annotations

import logging
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from appliance.config import HealthConfig
from appliance.health.report import offline_message

log = logging.getLogger(__name__)

EXPIRY_S = 10 * 365 * 86400  # a message's age is EXPIRY_S minus what the broker says is left
CONNECT_TIMEOUT_S = 10.0


def health_topic(device_id: str) -> str:
    return f"classcam/{device_id}/health"


class HealthPublisher:
    """The unit's MQTT client. Thread-safe: paho runs its network loop in its own thread."""

    def __init__(self, config: HealthConfig, device_id: str, version: str):
        self.topic = health_topic(device_id)
        self._where = f"{config.broker}:{config.port}"
        self._config = config
        self._outage = False  # an outage has been logged and has not ended yet
        self._lock = threading.Lock()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"classcam-{device_id}",
                             protocol=mqtt.MQTTv5)
        client.tls_set(ca_certs=str(config.ca_bundle) if config.ca_bundle else None,
                       certfile=str(config.client_cert) if config.client_cert else None,
                       keyfile=str(config.client_key) if config.client_key else None)
        if config.password_file is not None:
            password = config.password_file.read_text(encoding="utf-8").strip()
            client.username_pw_set(config.username or device_id, password)
        client.will_set(self.topic, offline_message(device_id, version), qos=1, retain=True,
                        properties=_expiring(PacketTypes.WILLMESSAGE))
        client.connect_timeout = CONNECT_TIMEOUT_S
        # Retries back off up to a period: no faster than there is anything new to say.
        client.reconnect_delay_set(1, max(1, min(120, round(config.period_s))))
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        self._client = client

    def start(self) -> None:
        """Connect in the background; returns at once, whether or not the broker is there."""
        self._client.connect_async(self._config.broker, self._config.port,
                                   keepalive=self._config.keepalive_s)
        self._client.loop_start()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish(self, payload: bytes) -> bool:
        """Send `payload` as the retained health message now, if connected."""
        if not self._client.is_connected():
            return False
        info = self._client.publish(self.topic, payload, qos=0, retain=True,
                                    properties=_expiring())
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def stop(self) -> None:
        """Disconnect asking the broker to publish the last will: a stopped unit is offline."""
        self._client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT,
                                                      "Disconnect with will message"))
        self._client.loop_stop()

    # -- paho's callbacks (its network thread) --------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._lost(f"the broker refused the login: {reason_code}")
            return
        with self._lock:
            was_out, self._outage = self._outage, False
        if was_out:
            log.info("MQTT broker reachable again at %s; health is published again", self._where)

    def _on_connect_fail(self, client, userdata) -> None:
        self._lost("connection failed")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.value != 0 or flags.is_disconnect_packet_from_server:
            self._lost(f"connection lost: {reason_code}")

    def _lost(self, why: str) -> None:
        with self._lock:
            if self._outage:
                return
            self._outage = True
        log.warning("cannot reach the MQTT broker at %s (%s); recording and uploads go on, "
                    "health is published again when it is back", self._where, why)


def _expiring(packet: int = PacketTypes.PUBLISH) -> Properties:
    properties = Properties(packet)
    properties.MessageExpiryInterval = EXPIRY_S
    return properties
