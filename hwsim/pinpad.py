"""A simulated PIN pad: holds each enrolled teacher's signing key sealed under their PIN, and on
a correct PIN mints a real token for the unit's current challenge and sends it over the real link.

    enrol(keystore, card_path, signing_key_path, passphrase, pin="4321")
    pad = SimPinPad(keystore, socket_path)
    await pad.connect()
    result = await pad.enter("t-evans", "4321")     # {"type": "result", "ok": True, ...}
"""
from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

from teacher_tools.keys import KeyFileError, load_signing_key, seal_signing_key
from appliance.padlink import encode
from appliance.token import mint
from formats.card import TeacherCard
from hwsim.timeline import Timeline
from formats.durable import atomic_write

log = logging.getLogger(__name__)

MAX_WRONG_PINS = 5


def enrol(keystore: Path, card_path: Path, signing_key_path: Path, passphrase: str,
          pin: str) -> TeacherCard:
    """Put a teacher's signing key on the pad, resealed under their PIN."""
    card = TeacherCard.parse(card_path.read_bytes())
    key = load_signing_key(signing_key_path, passphrase)
    keystore.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(keystore / f"{card.teacher_id}.pem", seal_signing_key(key, pin), mode=0o600)
    atomic_write(keystore / f"{card.teacher_id}.card.json", card_path.read_bytes())
    return card


class SimPinPad:
    """The pad end of the local link."""

    def __init__(self, keystore: Path, socket_path: Path, timeline: Timeline | None = None):
        self._keystore = keystore
        self._socket_path = socket_path
        self._timeline = timeline or Timeline()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._challenge: dict | None = None
        self._results: asyncio.Queue[dict] = asyncio.Queue()
        self._wrong_pins: dict[str, int] = {}
        self._listener: asyncio.Task | None = None

    async def connect(self, attempts: int = 50) -> None:
        await self._open(attempts)
        self._listener = asyncio.create_task(self._listen())

    async def _open(self, attempts: int) -> None:
        for _ in range(attempts):
            try:
                self._reader, self._writer = await asyncio.open_unix_connection(
                    str(self._socket_path))
                return
            except (FileNotFoundError, ConnectionRefusedError):
                await asyncio.sleep(0.1)
        raise ConnectionError(f"no unit listening on {self._socket_path}")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
        if self._writer is not None:
            self._writer.close()

    async def press_record(self) -> None:
        """The pad's record key: arms the unit, as the button does."""
        await self._send({"type": "arm"})

    async def enter(self, teacher_id: str, pin: str, action: str = "start",
                    wait_s: float = 5.0) -> dict:
        """Type a PIN. Returns the unit's result, or a local refusal (`"pad": true`) for a wrong
        PIN, a locked key, an unknown teacher or no challenge."""
        key_path = self._keystore / f"{teacher_id}.pem"
        if not key_path.exists():
            return self._local("teacher not on this pad")
        if self._wrong_pins.get(teacher_id, 0) >= MAX_WRONG_PINS:
            return self._local("locked after too many wrong PINs")
        try:  # scrypt takes a second or so: off the loop the simulator shares with the daemon
            key = await asyncio.to_thread(load_signing_key, key_path, pin)
        except KeyFileError:
            self._wrong_pins[teacher_id] = self._wrong_pins.get(teacher_id, 0) + 1
            return self._local("wrong PIN")
        self._wrong_pins.pop(teacher_id, None)
        challenge = await self._wait_for_challenge(wait_s)
        if challenge is None:
            return self._local("no challenge: press record first")
        card = TeacherCard.parse((self._keystore / f"{teacher_id}.card.json").read_bytes())
        token = mint(key, teacher_id, challenge["device"], challenge["nonce"], card.recipient,
                     action=action)
        self._challenge = None
        self._timeline("pad", sent="token", act=action)
        return await self.send_token(token, wait_s)

    async def send_token(self, token: str, wait_s: float = 5.0) -> dict:
        """Send any token as it is (tests use this for forged ones) and wait for the result."""
        while not self._results.empty():  # answers to earlier messages (an arm that disarmed)
            self._results.get_nowait()
        await self._send({"type": "token", "token": token})
        return await asyncio.wait_for(self._results.get(), wait_s)

    async def _wait_for_challenge(self, wait_s: float) -> dict | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self._challenge is None and loop.time() < deadline:
            await asyncio.sleep(0.01)
        return self._challenge

    async def _send(self, msg: dict) -> None:
        assert self._writer is not None, "connect() first"
        for _ in range(100):  # the listener is reconnecting
            if not self._writer.is_closing():
                break
            await asyncio.sleep(0.05)
        self._writer.write(encode(msg))
        await self._writer.drain()

    async def _listen(self) -> None:
        # The unit closes a connection that has been quiet a while (and one too many): a pad
        # reconnects, and the unit sends it the current challenge, if any, when it does.
        while True:
            assert self._reader is not None
            try:
                while line := await self._reader.readline():
                    msg = json.loads(line)
                    if msg.get("type") == "challenge":
                        self._challenge = msg
                    elif msg.get("type") == "result":
                        await self._results.put(msg)
            except (ConnectionError, OSError):
                pass
            self._writer.close()
            await asyncio.sleep(0.1)
            try:
                await self._open(attempts=50)
            except ConnectionError as e:
                log.warning("pad: %s", e)
                return

    def _local(self, reason: str) -> dict:
        self._timeline("pad", refused=reason)
        return {"type": "result", "ok": False, "reason": reason, "pad": True}
