"""The daemon's health loop: on each tick of the fixed period, and at no other moment (P9),

1. read what the upload server said since the last tick (the uploader's news, and the probe the
   last tick started), and write the journal's upload lines if that changed;
2. build the health report from the passive checks, publish it (retained, MQTT) if a broker is
   configured, and set systemd's STATUS=;
3. release the journal lines held since the last tick;
4. start the next server probe, whose answer the next tick reports.

    service = HealthService(config, unit, hw, spool, uploader, publisher, held, supervisor)
    task = asyncio.create_task(service.run())
"""
from __future__ import annotations

import concurrent.futures
import logging
import shutil
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance import __version__
from appliance.config import Config
from appliance.health.checks import Check, UnitView, passive_checks
from appliance.health.journal import HeldLines
from appliance.health.notify import Supervisor
from appliance.health.report import HealthReport, scrub
from appliance.health.schedule import FixedPeriod

if TYPE_CHECKING:  # paho-mqtt is imported only by a unit that publishes to a broker
    from appliance.health.publisher import HealthPublisher

log = logging.getLogger("health")

NO_SERVER = "no upload server configured ([upload] url)"


class HealthService:
    """Runs the ticks. Everything but the probe runs on the daemon's event loop."""

    def __init__(self, config: Config, unit, hw, spool, uploader=None,
                 publisher: HealthPublisher | None = None, held: HeldLines | None = None,
                 supervisor: Supervisor | None = None,
                 teacher_ids: Callable[[], list[str]] = lambda: [],
                 clock_synchronised: Callable[[], bool] = lambda: True,
                 started: float | None = None):
        self._config = config
        self._unit = unit
        self._hw = hw
        self._spool = spool
        self._uploader = uploader
        self._publisher = publisher
        self._held = held
        self._supervisor = supervisor or Supervisor()
        self._teacher_ids = teacher_ids
        self._clock_synchronised = clock_synchronised
        self._started = started if started is not None else time.monotonic()
        self._server: str | None = None if uploader is not None else NO_SERVER
        self._last_contact: float | None = None
        self._logged_upload: str | None = None
        self._logged_clock: str | None = None
        self._probe: concurrent.futures.Future | None = None
        self._prober = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="probe")
        self.schedule = FixedPeriod(config.health.period_s, config.device.id)

    async def run(self) -> None:
        """Tick until cancelled; the held journal lines are released on the way out too."""
        try:
            while True:
                await self.schedule.wait()
                self.tick()
        finally:
            if self._held is not None:
                self._held.write_out()
            self._prober.shutdown(wait=False, cancel_futures=True)

    def view(self) -> UnitView:
        return UnitView(self._unit, self._hw, self._clock_synchronised,
                        self._config.clock.synchronised, self._server,
                        self._config.capture.min_free_mb)

    def tick(self) -> None:
        """One tick: everything that IT may learn, all at once."""
        self._hear_server()
        checks = passive_checks(self.view())
        self._log_clock(checks)
        report = self.report(checks)
        if self._publisher is not None:
            self._publisher.publish(report.encode())
        failing = [c.name for c in checks if c.failed]
        self._supervisor.status(f"health: fault: {', '.join(failing)}" if failing
                                else "health: ok")
        if self._held is not None:
            self._held.write_out()
        if self._uploader is not None and (self._probe is None or self._probe.done()):
            self._probe = self._prober.submit(self._uploader.probe)

    def report(self, checks: list[Check]) -> HealthReport:
        teachers = self._teacher_ids()
        state_dir = self._config.device.state_dir
        try:
            free = shutil.disk_usage(state_dir).free
        except OSError:
            free = 0
        backlog = self._spool.backlog().bytes
        return HealthReport(
            device=self._config.device.id, version=__version__,
            period_s=self._config.health.period_s,
            uptime_s=time.monotonic() - self._started,
            disk_free_bytes=free, backlog_bytes=backlog,
            checks={c.name: scrub(c.reason, teachers) if c.failed else None for c in checks},
            last_server_contact=self._last_contact, at=time.time())

    def _hear_server(self) -> None:
        if self._uploader is None:
            return
        news = self._uploader.take_period()
        if news.answered:
            self._last_contact = time.time()
        reason = news.failure or self._uploader.status().failing
        self._server = scrub(reason, self._teacher_ids()) if reason else None
        if self._server != self._logged_upload:
            if self._server is not None:
                log.error("fault: upload: %s; recordings are kept on the unit and retried",
                          self._server)
            else:
                log.info("upload: working again")
            self._logged_upload = self._server

    def _log_clock(self, checks: list[Check]) -> None:
        reason = next(c.reason for c in checks if c.name == "clock") or None
        if reason != self._logged_clock:
            if reason:
                log.warning("fault: clock: %s", reason)
            elif self._logged_clock:
                log.info("clock: synchronised")
            self._logged_clock = reason

