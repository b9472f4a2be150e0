"""What the benchmarks read about processes from /proc: memory, and how loaded the machine is."""
from __future__ import annotations

import threading
from pathlib import Path


def proc_status(pid: int) -> dict[str, int]:
    """The kB fields of /proc/PID/status (VmRSS, VmHWM, ...)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            fields[key] = int(value.split()[0])
    return fields


def loadavg() -> float:
    """The 1-minute load average."""
    return float(Path("/proc/loadavg").read_text().split()[0])


class ProcWatcher:
    """Samples a process's memory every `period` seconds until stopped or the process ends:
    its first and peak VmRSS and its peak VmHWM, in KiB. (A child's rusage ru_maxrss would
    start from its parent's, so /proc is read instead.)"""

    def __init__(self, pid: int, period: float = 0.02):
        self.first_rss = self.peak_rss = self.peak_hwm = self.samples = 0
        self._pid, self._period = pid, period
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _poll(self) -> None:
        while not self._stopped.is_set():
            try:
                status = proc_status(self._pid)
            except OSError:
                return
            if "VmRSS" not in status:  # a zombie: it has exited
                return
            if not self.samples:
                self.first_rss = status["VmRSS"]
            self.peak_rss = max(self.peak_rss, status["VmRSS"])
            self.peak_hwm = max(self.peak_hwm, status.get("VmHWM", 0))
            self.samples += 1
            self._stopped.wait(self._period)
