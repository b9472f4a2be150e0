"""P1-P3 read off a simulator timeline: each check returns the violations it found (empty when
the invariant held). They look only at what the simulated hardware and the pad link recorded.

    problems = check_all(events)
"""
from __future__ import annotations

DEVICES = ("camera", "microphone")


def check_all(events: list[dict]) -> list[str]:
    """Every violation of P1, P2 and P3 in `events`."""
    return check_p1(events) + check_p2(events) + check_p3(events)


def led_intervals(events: list[dict], name: str = "recording_led") -> list[tuple[float, float]]:
    """(on, off) times of a light; an interval still open at the end ends at +inf."""
    intervals, on_at = [], None
    for e in events:
        if e["ev"] == "pin" and e["name"] == name:
            if e["value"] > 0 and on_at is None:
                on_at = e["t"]
            elif e["value"] == 0 and on_at is not None:
                intervals.append((on_at, e["t"]))
                on_at = None
    if on_at is not None:
        intervals.append((on_at, float("inf")))
    return intervals


def device_intervals(events: list[dict]) -> list[tuple[str, float, float]]:
    """(device, open, close) for every time a capture device was open."""
    intervals, opened = [], {}
    for e in events:
        if e["ev"] != "device":
            continue
        if e["phase"] == "open":
            opened[e["device"]] = e["t"]
        elif e["phase"] == "close" and e["device"] in opened:
            intervals.append((e["device"], opened.pop(e["device"]), e["t"]))
    intervals += [(d, t, float("inf")) for d, t in opened.items()]
    return sorted(intervals, key=lambda i: i[1])


def check_p1(events: list[dict]) -> list[str]:
    """Every device open follows an accepted start token for the challenge most recently issued,
    and no second open session reuses one token. A session's devices that closed with the
    recording LED going dark (a pause) open again only after a fresh accepted token."""
    problems = []
    challenge = None          # the nonce of the latest challenge
    authorised = False        # an accepted start token for that challenge, not yet used
    session_open = False
    used: set[str | None] = set()  # nonces a token was accepted for
    for e in events:
        if e["ev"] == "challenge":
            challenge, authorised = e["nonce"], False
        elif e["ev"] == "token" and e.get("ok") and e.get("act") == "start":
            if e.get("nonce") != challenge:
                problems.append(f"P1: token accepted at {e['t']:.6f} for a nonce that is not "
                                "the current challenge")
            if e.get("nonce") in used:
                problems.append(f"P1: token accepted at {e['t']:.6f} for a nonce already used")
            used.add(e.get("nonce"))
            authorised = e.get("nonce") == challenge
        elif e["ev"] == "device" and e["phase"] == "open":
            if not (authorised or session_open):
                problems.append(f"P1: {e['device']} opened at {e['t']:.6f} without a verified "
                                "token for the current challenge")
            authorised = authorised and session_open  # a token opens one session only
            session_open = True
        elif e["ev"] == "pin" and e["name"] == "recording_led" and e["value"] == 0:
            session_open = False  # every device closed: the next open needs a fresh token
        elif e["ev"] == "state" and e["state"] == "idle":
            if session_open or authorised:
                authorised, session_open = False, False
                challenge = None
    return problems


def check_p2(events: list[dict]) -> list[str]:
    """The recording LED was lit strictly before each device opened and went dark strictly after
    it closed."""
    lit = led_intervals(events)
    problems = []
    for device, opened, closed in device_intervals(events):
        if not any(on < opened and (closed < off or closed == off == float("inf"))
                   for on, off in lit):
            problems.append(f"P2: {device} open {opened:.6f}-{closed:.6f} outside a lit interval "
                            f"of the recording LED {lit}")
    return problems


def check_p3(events: list[dict]) -> list[str]:
    """Before the first device of each session opened, a start notice played to the end, after
    the LED went on."""
    problems = []
    notice_started_at = notice_done_at = None
    led_on_at = None
    session_open = False
    for e in events:
        if e["ev"] == "pin" and e["name"] == "recording_led":
            led_on_at = e["t"] if e["value"] > 0 else None
            if e["value"] == 0:
                notice_done_at, session_open = None, False
        elif e["ev"] == "notice" and e["label"] == "start" and e["phase"] == "start":
            notice_started_at, notice_done_at = e["t"], None
        elif e["ev"] == "notice" and e["label"] == "start" and e["phase"] == "end":
            notice_done_at = e["t"] if e.get("completed") else None
        elif e["ev"] == "device" and e["phase"] == "open" and not session_open:
            session_open = True
            if (notice_done_at is None or led_on_at is None
                    or not led_on_at < notice_started_at < notice_done_at < e["t"]):
                problems.append(f"P3: {e['device']} opened at {e['t']:.6f} without a complete "
                                "start notice after the LED went on")
    return problems
