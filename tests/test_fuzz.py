"""Property tests: random bytes and random JSON thrown at the token parser, the pad-link parser
and the running daemon's pad socket. The daemon keeps answering and never opens capture."""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from appliance.padlink import MAX_LINE, MalformedMessage, parse_message
from appliance.roster import Roster
from appliance.token import Reason, TokenRejected, TokenVerifier
from hwsim.invariants import device_intervals

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10),
                                                                      children, max_size=5),
    max_leaves=20)
messages = st.one_of(
    json_values,
    st.fixed_dictionaries({"type": st.sampled_from(
        ["arm", "token", "stop", "mark", "pause", "preview", "result", "challenge"])},
                          optional={"token": json_values | st.text(max_size=200),
                                    "nonce": st.text(max_size=30)}),
)
jwt_like = st.lists(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=",
                            max_size=60), min_size=1, max_size=4).map(".".join)


def _with_enrolled_kid(parts) -> str:
    # A header naming an enrolled teacher, so random claims and signatures reach PyJWT's decode.
    import base64
    def b64(v) -> str:
        return base64.urlsafe_b64encode(json.dumps(v).encode()).rstrip(b"=").decode()
    return f"{b64({'alg': 'EdDSA', 'kid': 't-evans'})}.{b64(parts[0])}.{b64(parts[1])}"


# What the token's own bytes can be refused for; the rest (not armed, replayed, ...) are about
# the unit's state, which the verifier never sees.
TOKEN_REASONS = {Reason.MALFORMED, Reason.BAD_ALGORITHM, Reason.UNKNOWN_TEACHER,
                 Reason.BAD_SIGNATURE, Reason.WRONG_DEVICE, Reason.EXPIRED_TOKEN,
                 Reason.WRONG_RECIPIENT, Reason.WRONG_ACTION}


@given(st.one_of(st.binary(max_size=600), st.text(max_size=600), jwt_like,
                 st.tuples(json_values, json_values).map(_with_enrolled_kid)))
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_token_parser_only_ever_refuses_with_a_reason(lab_template, raw):
    verifier = TokenVerifier(Roster(lab_template.roster_dir), "unit-1", lambda: True)
    with pytest.raises(TokenRejected) as e:
        verifier.verify(raw)
    # One of the named reasons (the pad shows it, the journal logs it), not any string.
    assert type(e.value.reason) is Reason and e.value.reason in TOKEN_REASONS, e.value.reason
    assert str(e.value).split(": ", 1)[0] == e.value.reason.value


@given(st.one_of(st.binary(max_size=300), messages.map(lambda m: json.dumps(m).encode())))
@settings(max_examples=400)
def test_pad_link_parser_accepts_only_the_pad_messages_with_their_exact_keys(line):
    try:
        msg = parse_message(line)
    except MalformedMessage:
        return
    assert msg["type"] in ("arm", "stop", "token", "mark", "pause", "preview")
    assert set(msg) == ({"type", "token"} if msg["type"] == "token" else {"type"})


@pytest.fixture(scope="module")
def running(lab_template):
    root = Path(tempfile.mkdtemp(prefix="cc-"))
    lab = lab_template.copy(root)
    with lab.daemon() as unit:
        yield lab, unit
    shutil.rmtree(root, ignore_errors=True)


def _throw(path: Path, payload: bytes) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(path))
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):  # read every answer until the unit closes its side
            pass


@given(st.lists(st.one_of(
    st.binary(max_size=200),
    messages.map(lambda m: json.dumps(m).encode() + b"\n"),
    st.just(b"x" * (MAX_LINE + 10) + b"\n"),
), min_size=1, max_size=6), st.booleans())
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_daemon_survives_anything_on_the_pad_link_and_never_opens_capture(running, chunks, arm):
    lab, unit = running
    if arm and unit.state() == "idle":
        unit.control("press")
    _throw(lab.pad_socket, b"".join(chunks))
    assert unit.proc.poll() is None
    assert unit.control("status")["open"] == []
    assert device_intervals(lab.timeline()) == []


def test_after_the_storm_a_real_teacher_still_records(running):
    lab, unit = running
    if unit.state() == "armed":
        unit.control("press")
    unit.wait_state("idle")
    assert unit.lesson("t-evans", seconds=0.1)["ok"]
    assert len(device_intervals(lab.timeline())) == 2
    assert "Traceback" not in lab.journal()
