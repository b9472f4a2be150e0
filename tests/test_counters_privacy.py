"""P9 for the security keys' signature counters (appliance/assertion.py, `SignCounters`): the
file kept for replay protection says neither whose key was used last nor when. Read from the
bytes and the times on disk."""
from __future__ import annotations

import os

import pytest

from appliance.assertion import COUNTERS_FILE, CounterUse, SignCounters
from appliance.token import TokenRejected

OLD_NS = 1_000_000_000 * 1_600_000_000  # 2020-09-13: a time the unit set long before


def _used(directory, order: list[bytes]) -> bytes:
    counters = SignCounters(directory / COUNTERS_FILE)
    for n, credential in enumerate(order, start=1):
        counters.record(CounterUse(credential, n))
    counters.record(CounterUse(b"the same last", 99))
    return (directory / COUNTERS_FILE).read_bytes()


def test_the_counters_file_does_not_say_whose_key_was_used_last(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = _used(tmp_path / "a", [b"evans", b"jones"])
    # The same counters, the keys used in the other order: the same bytes.
    counters = SignCounters(tmp_path / "b" / COUNTERS_FILE)
    counters.record(CounterUse(b"jones", 2))
    counters.record(CounterUse(b"evans", 1))
    counters.record(CounterUse(b"the same last", 99))
    assert (tmp_path / "b" / COUNTERS_FILE).read_bytes() == first


def test_no_time_on_disk_says_when_a_key_was_used(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    os.utime(state, ns=(OLD_NS, OLD_NS))
    counters = SignCounters(state / COUNTERS_FILE)
    counters.record(CounterUse(b"evans", 7))
    counters.record(CounterUse(b"jones", 3))
    assert os.stat(state).st_mtime_ns == OLD_NS  # the rename did not move its directory's time
    assert os.stat(state / COUNTERS_FILE).st_mtime_ns == 0
    assert [p.name for p in state.iterdir()] == [COUNTERS_FILE]  # no temporary file left
    reloaded = SignCounters(state / COUNTERS_FILE)  # and it still protects against replay
    reloaded.check(CounterUse(b"evans", 8))
    with pytest.raises(TokenRejected):
        reloaded.check(CounterUse(b"jones", 3))
