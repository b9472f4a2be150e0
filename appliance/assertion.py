"""Start tokens from a teacher's FIDO2 security key (DESIGN.md section 4, "Start token from a
security key"): the unit checks an assertion with the rules it applies to a JWT start token
(appliance/token.py), and the rules FIDO adds.

    verifier = AssertionVerifier(roster, device_id="unit-1", clock_synchronised=lambda: False)
    token, use = verifier.verify(msg["assertion"])   # everything but the challenge and counter
    counters.check(use)                                # the key's signature counter went up
    await asyncio.to_thread(counters.write, counters.remember(use))
    challenges.consume(token.nonce, armed=True)       # armed, current challenge, not used before

What is checked, each refusal a `Reason`:
* the teacher is enrolled and their card names a security key, and this is its credential id;
* the authenticator data is for the relying party `classcam` (rpIdHash = SHA-256("classcam"));
* the signature over authenticator data || SHA-256(client data) verifies with the card's COSE
  key, by fido2.cose's `verify` (the card allows ES256 and EdDSA keys only);
* the user was present (UP: the key was touched) and verified (UV: the key checked the PIN);
* the client data, read from the signed bytes, names this teacher, this device, an action the
  unit knows and the recipient the roster pins; `iat` is checked (with `clock.skew_s`) only
  when the system clock is known to be synchronised, as a JWT's is: freshness comes from the
  challenge;
* the signature counter is higher than the last one this unit accepted from that credential
  (`SignCounters`, kept in the state directory): a lower or equal one means a cloned key or a
  replay. A key that does not implement a counter sends 0 every time; 0 is accepted only while
  every counter from that credential has been 0 (once it was higher, 0 is going backwards).

Privacy (P9): the counter file lists credentials by the SHA-256 of their id, never a teacher id,
and its content says only how many signatures each key had made when last used here. Its
modification time does say when a security key was last used at this unit, as any state change
would; nothing else about who recorded when is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature

from appliance.roster import Roster
from appliance.token import ACTIONS, Reason, StartToken, TokenRejected
from formats.assertion import RP_ID_HASH, client_data_hash, parse_client_data, parse_message
from formats.durable import atomic_write

log = logging.getLogger(__name__)

COUNTERS_FILE = "security-key-counters.json"
MAX_COUNTERS = 4096  # credentials remembered; the oldest-used is forgotten beyond this


@dataclass(frozen=True)
class CounterUse:
    """A credential's signature counter, as one verified assertion reported it."""

    credential_id: bytes
    counter: int


class AssertionVerifier:
    """Checks everything about an assertion except the challenge state (`Challenges`) and the
    signature counter (`SignCounters`)."""

    def __init__(self, roster: Roster, device_id: str,
                 clock_synchronised: Callable[[], bool], skew_s: float = 300):
        self._roster = roster
        self._device_id = device_id
        self._clock_synchronised = clock_synchronised
        self._skew_s = skew_s

    def verify(self, inner: object) -> tuple[StartToken, CounterUse]:
        """The claims of the assertion `inner` (the link message's "assertion" object) and its
        counter, or `TokenRejected` with the first failed check."""
        try:
            assertion = parse_message(inner)
        except ValueError as e:
            raise TokenRejected(Reason.MALFORMED, str(e)) from None
        card = self._roster.get(assertion.teacher_id)
        if card is None:
            raise TokenRejected(Reason.UNKNOWN_TEACHER)
        credential = card.security_key
        if credential is None:
            raise TokenRejected(Reason.UNKNOWN_CREDENTIAL, "the card names no security key")
        if not secrets.compare_digest(assertion.credential_id, credential.credential_id):
            raise TokenRejected(Reason.UNKNOWN_CREDENTIAL)
        from fido2.webauthn import AuthenticatorData  # only when a security key is used
        try:
            auth = AuthenticatorData(assertion.authenticator_data)
        except Exception as e:  # fido2's parser raises what its input provokes
            raise TokenRejected(Reason.MALFORMED, f"authenticator data: {type(e).__name__}") \
                from None
        if not secrets.compare_digest(auth.rp_id_hash, RP_ID_HASH):
            raise TokenRejected(Reason.WRONG_RELYING_PARTY)
        try:
            credential.public_key.verify(
                assertion.authenticator_data + client_data_hash(assertion.client_data),
                assertion.signature)
        except (InvalidSignature, ValueError):
            raise TokenRejected(Reason.BAD_SIGNATURE) from None
        if not auth.is_user_present():
            raise TokenRejected(Reason.NO_USER_PRESENCE)
        if not auth.is_user_verified():
            raise TokenRejected(Reason.NO_USER_VERIFICATION)
        try:
            claims = parse_client_data(assertion.client_data)
        except ValueError as e:
            raise TokenRejected(Reason.MALFORMED, str(e)) from None
        if claims.teacher_id != assertion.teacher_id:
            raise TokenRejected(Reason.MALFORMED, "sub differs from the teacher")
        if claims.device_id != self._device_id:
            raise TokenRejected(Reason.WRONG_DEVICE)
        if claims.action not in ACTIONS:
            raise TokenRejected(Reason.WRONG_ACTION, f"act {claims.action!r:.20}")
        if claims.recipient != card.recipient:
            raise TokenRejected(Reason.WRONG_RECIPIENT)
        if self._clock_synchronised() and abs(time.time() - claims.issued_at) > self._skew_s:
            raise TokenRejected(Reason.EXPIRED_TOKEN)
        token = StartToken(assertion.teacher_id, claims.nonce, claims.action, card.recipient)
        return token, CounterUse(assertion.credential_id, auth.counter)


class SignCounters:
    """The last signature counter accepted from each security-key credential, kept durably in
    `path` (JSON, credential ids by their SHA-256). `check` and `remember` work in memory, on
    the event loop; `write` is file I/O, for a thread. The file says neither whose key was used
    last nor when (P9): its entries are in the keys' order, and no time on disk moves.

    A file that cannot be read refuses every assertion (fails closed) until IT removes it."""

    def __init__(self, path: Path):
        self._path = path
        self._problem: str | None = None
        self._last: dict[str, int] = {}
        self._version = self._written = 0
        self._writing = threading.Lock()
        try:
            doc = json.loads(path.read_bytes())
            if not isinstance(doc, dict) or not all(
                    isinstance(k, str) and type(v) is int and v >= 0 for k, v in doc.items()):
                raise ValueError("not a map of credential to counter")
            self._last = doc
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:
            self._problem = f"{path}: {e}"
            log.error("security-key counters unreadable, refusing security keys: %s", e)

    def check(self, use: CounterUse) -> None:
        """`TokenRejected` unless `use.counter` is higher than the last accepted one, or it and
        every earlier one are 0 (a key without a counter)."""
        if self._problem is not None:
            raise TokenRejected(Reason.COUNTER_NOT_INCREASING, self._problem)
        last = self._last.get(_key(use.credential_id))
        if last is None or use.counter > last or use.counter == last == 0:
            return
        raise TokenRejected(Reason.COUNTER_NOT_INCREASING, f"{use.counter} after {last}")

    def remember(self, use: CounterUse) -> Snapshot:
        """Remember `use.counter` (never lowering what is remembered), at once and in memory;
        returns what `write` makes durable. Call it on the loop that calls `check`."""
        key = _key(use.credential_id)
        last = self._last.pop(key, 0)
        self._last[key] = max(last, use.counter)  # re-inserted: the most recently used is last
        while len(self._last) > MAX_COUNTERS:
            del self._last[next(iter(self._last))]
        self._version += 1
        # Written in the keys' order, not the order of use: the file does not say whose key
        # was used last (P9).
        return Snapshot(self._version, json.dumps(dict(sorted(self._last.items()))).encode())

    def write(self, snapshot: Snapshot) -> None:
        """Make `snapshot` durable, unless a later one already is (file I/O: call it off the
        loop). OSError if the file cannot be written."""
        with self._writing:
            if snapshot.version <= self._written:
                return
            directory = self._path.parent
            directory.mkdir(parents=True, exist_ok=True)
            before = directory.stat()
            atomic_write(self._path, snapshot.data, mode=0o600)
            # Nor when (P9): the file's times say nothing, and its directory's stay as they were.
            os.utime(self._path, ns=(0, 0))
            os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns))
            self._written = snapshot.version

    def record(self, use: CounterUse) -> None:
        """`remember` and `write` in one (for callers off the event loop)."""
        self.write(self.remember(use))


@dataclass(frozen=True)
class Snapshot:
    """The counters as they were after one `SignCounters.remember`."""

    version: int
    data: bytes


def _key(credential_id: bytes) -> str:
    return hashlib.sha256(credential_id).hexdigest()
