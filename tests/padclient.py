"""A minimal pad for tests: speaks the pad link directly, so a test can send any token."""
from __future__ import annotations

import json
import socket
from pathlib import Path

from teacher_tools.keys import load_signing_key
from appliance.roster import TeacherCard
from appliance.token import mint
from hwsim.lab import DEVICE_ID, PASSPHRASE, Lab


class PadClient:
    def __init__(self, path: Path, timeout: float = 10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")

    def send_line(self, raw: bytes) -> None:
        self.file.write(raw)
        self.file.flush()

    def send(self, msg: dict) -> None:
        self.send_line(json.dumps(msg).encode() + b"\n")

    def receive(self, kind: str) -> dict:
        """The next message of type `kind` (skipping others)."""
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("unit closed the link")
            msg = json.loads(line)
            if msg["type"] == kind:
                return msg

    def token(self, token: str) -> dict:
        self.send({"type": "token", "token": token})
        return self.receive("result")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def teacher_token(lab: Lab, teacher_id: str, nonce: str, **overrides) -> str:
    """A correctly signed token of `teacher_id`, with any claim replaced by `overrides`."""
    files = lab.key_files(teacher_id)
    key = load_signing_key(files.signing_key, PASSPHRASE)
    card = TeacherCard.parse(files.card.read_bytes())
    args = dict(device_id=DEVICE_ID, nonce=nonce, recipient=card.recipient, action="start")
    args.update(overrides)
    return mint(key, teacher_id, **args)
