"""The pad's end of the local token link (DESIGN.md section 4): newline-delimited JSON over the
unit's Unix socket (/run/classcam/pinpad.sock).

    link = UnitLink(Path("/run/classcam/pinpad.sock"))
    task = asyncio.create_task(link.run())         # connects, and connects again, until cancelled
    await link.send({"type": "arm"})
    challenge = await link.challenge(wait_s=2)      # the unit's, while it is armed
    result = await link.request({"type": "token", "token": jwt}, timeout_s=10)

The unit closes a connection that has been quiet a while; the pad connects again at once, and
the unit sends it the current challenge, if any, when it does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential

log = logging.getLogger(__name__)

MAX_LINE = 8192
RECONNECT_MAX_S = 2.0
CONNECT_TIMEOUT_S = 5.0


class LinkDown(Exception):
    """The unit could not be reached within the time allowed."""


class UnitLink:
    """The connection to the unit, kept open; what the unit sent last is kept for the pad."""

    def __init__(self, socket_path: Path):
        self._socket_path = socket_path
        self._writer: asyncio.StreamWriter | None = None
        self._connected = asyncio.Event()
        self._challenge: dict | None = None
        self._challenge_until = 0.0
        self._results: asyncio.Queue[dict] = asyncio.Queue()
        self._down_since: float | None = None

    async def run(self) -> None:
        """Stay connected until cancelled. A link the unit closed is opened again at once; a
        unit that cannot be reached is tried again with a growing wait (at most
        `RECONNECT_MAX_S`)."""
        while True:
            retrying = AsyncRetrying(retry=retry_if_exception_type((OSError, TimeoutError, ValueError)),
                                     wait=wait_exponential(multiplier=0.05, max=RECONNECT_MAX_S),
                                     before_sleep=self._lost)
            await retrying(self._connect_and_read)

    async def send(self, msg: dict, wait_s: float = 5.0) -> None:
        """Send one message, waiting up to `wait_s` for the link; `LinkDown` if it is not up."""
        try:
            async with asyncio.timeout(wait_s):
                while True:
                    await self._connected.wait()
                    writer = self._writer
                    if writer is not None and not writer.is_closing():
                        break
                    await asyncio.sleep(0.02)  # closed under us: the reader reconnects
                writer.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
                await writer.drain()
        except (TimeoutError, ConnectionError, OSError) as e:
            raise LinkDown(f"cannot reach the unit: {type(e).__name__}") from None

    async def request(self, msg: dict, timeout_s: float) -> dict:
        """Send `msg` and return the unit's next result. `LinkDown`, or `TimeoutError` when the
        unit does not answer within `timeout_s`."""
        while not self._results.empty():  # answers to earlier messages (an arm that disarmed)
            self._results.get_nowait()
        await self.send(msg, wait_s=timeout_s)
        async with asyncio.timeout(timeout_s):
            return await self._results.get()

    async def challenge(self, wait_s: float) -> dict | None:
        """The unit's current challenge, waiting up to `wait_s` for one; None if there is none."""
        deadline = time.monotonic() + wait_s
        while True:
            if self._challenge is not None and time.monotonic() < self._challenge_until:
                return self._challenge
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.02)

    def used(self, challenge: dict) -> None:
        """A token for `challenge` was sent: it is no good for another."""
        if self._challenge is challenge:
            self._challenge = None

    async def _connect_and_read(self) -> None:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reader, writer = await asyncio.open_unix_connection(str(self._socket_path),
                                                                limit=MAX_LINE + 2)
        if self._down_since is not None:
            log.info("pad link: connected to the unit again")
            self._down_since = None
        self._writer = writer
        self._connected.set()
        try:
            while line := await reader.readline():
                self._received(line)
        finally:
            self._connected.clear()
            writer.close()

    def _received(self, line: bytes) -> None:
        try:
            msg = json.loads(line)
        except ValueError:
            log.warning("pad link: the unit sent a line that is not JSON")
            return
        if not isinstance(msg, dict):
            return
        if msg.get("type") == "challenge" and isinstance(msg.get("nonce"), str):
            self._challenge = msg
            expires_in = msg.get("expires_in")
            ttl = float(expires_in) if isinstance(expires_in, (int, float)) else 60.0
            self._challenge_until = time.monotonic() + ttl
        elif msg.get("type") == "result":
            self._results.put_nowait(msg)

    def _lost(self, state: RetryCallState) -> None:
        assert state.outcome is not None
        error = state.outcome.exception()
        if self._down_since is None:  # one line per outage
            self._down_since = time.monotonic()
            log.warning("pad link: cannot reach the unit at %s (%s); trying again",
                        self._socket_path, error)
