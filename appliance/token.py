"""Start tokens (DESIGN.md section 4) and the challenges that make them fresh.

A start token is a JWT signed with the teacher's Ed25519 key. The unit accepts one only while
armed, only for the challenge it issued when armed, only once, and only if the signature verifies
against the teacher's enrolled key. Verification hands PyJWT a key *object* and the algorithm list
`["EdDSA"]` alone, so an HMAC token keyed with the public key, or `alg: none`, cannot pass.

    verifier = TokenVerifier(roster, device_id="unit-1", clock_synchronised=lambda: False)
    token = verifier.verify(raw)          # signature, teacher, device, action, recipient
    challenges.consume(token.nonce)       # armed, current challenge, not used before
"""
from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass
from collections.abc import Callable

import jwt

from formats.ids import is_teacher_id
from formats.starttoken import mint  # noqa: F401  (minting moved there; re-exported)
from appliance.roster import Roster

ALGORITHMS = ["EdDSA"]  # hard-coded, never from the token or the configuration
MAX_TOKEN_BYTES = 4096
MAX_LIFETIME_S = 120
ACTIONS = ("start", "discard")
_REQUIRED = ["sub", "aud", "nonce", "iat", "exp", "act", "rcpt"]


class Reason(enum.StrEnum):
    """Why a token was refused; the value is what the journal and the pad show."""

    MALFORMED = "malformed"
    BAD_ALGORITHM = "algorithm not allowed"
    UNKNOWN_TEACHER = "unknown teacher"
    BAD_SIGNATURE = "bad signature"
    WRONG_DEVICE = "wrong device"
    EXPIRED_TOKEN = "expired token"
    WRONG_RECIPIENT = "recipient does not match roster"
    WRONG_ACTION = "wrong action"
    NOT_ARMED = "not armed"
    EXPIRED_CHALLENGE = "expired challenge"
    REPLAYED = "replayed"
    NOTHING_TO_DISCARD = "nothing to discard"
    ALREADY_UPLOADED = "already uploaded: delete it from your account"
    # Assertions from a security key (appliance/assertion.py)
    UNKNOWN_CREDENTIAL = "unknown credential"
    WRONG_RELYING_PARTY = "wrong relying party"
    NO_USER_PRESENCE = "user presence missing"
    NO_USER_VERIFICATION = "PIN not verified by the key"
    COUNTER_NOT_INCREASING = "signature counter did not increase"
    PAUSED_BY_ANOTHER = "paused by another teacher"
    # A teacher whose card names a security key starts only with it, never with a token signed
    # by the key file on their computer.
    SECURITY_KEY_REQUIRED = "use your security key"


class TokenRejected(Exception):
    """A refused token. `reason` is one of `Reason`; `detail` is for the journal only."""

    def __init__(self, reason: Reason, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else str(reason))
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class StartToken:
    """The verified claims of a token whose signature, device and recipient are good."""

    teacher_id: str
    nonce: str
    action: str
    recipient: str


class TokenVerifier:
    """Checks everything about a token except the challenge state (see `Challenges`)."""

    def __init__(self, roster: Roster, device_id: str,
                 clock_synchronised: Callable[[], bool], skew_s: float = 300):
        self._roster = roster
        self._device_id = device_id
        self._clock_synchronised = clock_synchronised
        self._skew_s = skew_s

    def verify(self, raw: str | bytes) -> StartToken:
        """Return the token's claims, or raise `TokenRejected` with the first failed check."""
        if isinstance(raw, bytes):
            try:
                raw = raw.decode("ascii")
            except UnicodeDecodeError:
                raise TokenRejected(Reason.MALFORMED, "not ASCII") from None
        if not isinstance(raw, str) or not raw or len(raw) > MAX_TOKEN_BYTES:
            raise TokenRejected(Reason.MALFORMED, "empty or too long")
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.InvalidTokenError as e:
            raise TokenRejected(Reason.MALFORMED, str(e)) from None
        except Exception as e:  # any other failure to parse is a refusal too, never a crash
            raise TokenRejected(Reason.MALFORMED, _parse_error(e)) from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected(Reason.BAD_ALGORITHM, f"alg {header.get('alg')!r:.40}")
        teacher_id = header.get("kid")
        if not isinstance(teacher_id, str) or not is_teacher_id(teacher_id):
            raise TokenRejected(Reason.MALFORMED, "kid is not a teacher id")
        card = self._roster.get(teacher_id)
        if card is None:
            raise TokenRejected(Reason.UNKNOWN_TEACHER)
        if card.security_key is not None:
            raise TokenRejected(Reason.SECURITY_KEY_REQUIRED, "a token, not an assertion")
        check_time = self._clock_synchronised()
        try:
            claims = jwt.decode(
                raw, key=card.signing_key, algorithms=ALGORITHMS, audience=self._device_id,
                leeway=self._skew_s,
                options={"require": _REQUIRED, "verify_exp": check_time,
                         "verify_iat": check_time, "verify_nbf": check_time})
        except jwt.InvalidSignatureError:
            raise TokenRejected(Reason.BAD_SIGNATURE) from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(Reason.WRONG_DEVICE) from None
        except (jwt.ExpiredSignatureError, jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise TokenRejected(Reason.EXPIRED_TOKEN) from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(Reason.BAD_ALGORITHM) from None
        except jwt.InvalidTokenError as e:
            raise TokenRejected(Reason.MALFORMED, str(e)) from None
        except Exception as e:  # as above: e.g. a RecursionError from a deeply nested payload
            raise TokenRejected(Reason.MALFORMED, _parse_error(e)) from None
        return self._claims(claims, teacher_id, card.recipient)

    def _claims(self, claims: dict, teacher_id: str, recipient: str) -> StartToken:
        if claims["sub"] != teacher_id:
            raise TokenRejected(Reason.MALFORMED, "sub differs from kid")
        if claims["aud"] != self._device_id:  # a list audience is not accepted
            raise TokenRejected(Reason.WRONG_DEVICE)
        iat, exp = claims["iat"], claims["exp"]
        if not all(type(v) in (int, float) for v in (iat, exp)) or not 0 < exp - iat <= MAX_LIFETIME_S:
            raise TokenRejected(Reason.MALFORMED, f"lifetime must be at most {MAX_LIFETIME_S} s")
        if not isinstance(claims["nonce"], str) or not isinstance(claims["rcpt"], str):
            raise TokenRejected(Reason.MALFORMED, "nonce and rcpt must be strings")
        if claims["act"] not in ACTIONS:
            raise TokenRejected(Reason.WRONG_ACTION, f"act {claims['act']!r}")
        if claims["rcpt"] != recipient:
            raise TokenRejected(Reason.WRONG_RECIPIENT)
        # The recipient recordings are encrypted to comes from the roster card, nothing else.
        return StartToken(teacher_id, claims["nonce"], claims["act"], recipient)


class Challenges:
    """The unit's challenges: at most one current, each usable once, timed by a monotonic clock
    so that a Pi without a real-time clock keeps freshness."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic,
                 remember: int = 4096):
        self._ttl_s = ttl_s
        self._clock = clock
        self._remember = remember
        self._current: tuple[str, float] | None = None
        # Insertion-ordered and bounded: nonces a token has used, and nonces that expired unused.
        self._used: dict[str, None] = {}
        self._retired: dict[str, None] = {}

    def issue(self) -> str:
        """Start a new challenge, retiring any current one."""
        self.cancel()
        nonce = secrets.token_urlsafe(18)
        self._current = (nonce, self._clock() + self._ttl_s)
        return nonce

    @property
    def current(self) -> str | None:
        """The current challenge, or None if there is none or it has expired."""
        if self._current is None or self._clock() >= self._current[1]:
            return None
        return self._current[0]

    def cancel(self) -> None:
        """Retire the current challenge unused (disarmed or timed out)."""
        if self._current is not None:
            _remember(self._retired, self._current[0], self._remember)
        self._current = None

    def consume(self, nonce: str, armed: bool) -> None:
        """Use `nonce` once, or raise `TokenRejected`: replayed, expired challenge, not armed."""
        self.check(nonce, armed)
        _remember(self._used, nonce, self._remember)
        self._current = None

    def check(self, nonce: str, armed: bool) -> None:
        """Raise what `consume` would, without using `nonce`."""
        if nonce in self._used:
            raise TokenRejected(Reason.REPLAYED)
        if nonce in self._retired:
            raise TokenRejected(Reason.EXPIRED_CHALLENGE, "that challenge has ended")
        if not armed:
            raise TokenRejected(Reason.NOT_ARMED)
        current = self.current
        if current is None or not secrets.compare_digest(nonce.encode(), current.encode()):
            raise TokenRejected(Reason.EXPIRED_CHALLENGE, "not the current challenge")


def _parse_error(error: Exception) -> str:
    """What the journal says about a token PyJWT failed to parse other than by refusing it
    (older PyJWT let a RecursionError out of a deeply nested header)."""
    return f"cannot parse: {type(error).__name__}"


def _remember(book: dict[str, None], nonce: str, limit: int) -> None:
    book[nonce] = None
    while len(book) > limit:
        del book[next(iter(book))]


