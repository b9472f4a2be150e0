"""The unit file's lines for the Pi: memory the daemon may lock whole (P4, appliance/memory.py)
and libcamera quiet but for errors (P9). `tests/test_systemd.py` checks that the file verifies
and that its exposure stays low with them."""
from __future__ import annotations

from tests.test_systemd import _last, _service


def test_the_daemon_may_lock_all_its_memory():
    assert _last("LimitMEMLOCK") == "infinity"


def test_libcamera_writes_only_errors_to_the_journal():
    environment = " ".join(_service("Environment")).split()
    assert "LIBCAMERA_LOG_LEVELS=*:ERROR" in environment, environment
