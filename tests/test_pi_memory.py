"""P4 whatever the kernel: the daemon locks its memory (mlockall), so none of it is swapped; and
where it cannot, the unit will not arm while unencrypted swap is active."""
from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.memory import swap_problem
from appliance.roster import Roster
from appliance.unit import State, Unit
from led_indicator.patterns import Pattern
from tests.inprocess import NOTICES, sim_unit

HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"


def _vm_locked_kb(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmLck:\s+(\d+) kB", status, re.M).group(1))


def test_the_running_daemon_has_its_memory_locked(lab):
    with lab.daemon() as unit:
        locked = _vm_locked_kb(unit.proc.pid)
        rss = int(re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{unit.proc.pid}/status")
                            .read_text(), re.M).group(1))
        # Everything it has touched is locked (MCL_ONFAULT: pages as they are first used).
        assert locked >= 0.9 * rss, (locked, rss)
        assert unit.lesson(seconds=0.2)["ok"]
        assert _vm_locked_kb(unit.proc.pid) >= locked


def test_without_the_right_to_lock_memory_locking_fails_with_a_reason(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to drop CAP_IPC_LOCK with setpriv")
    code = "from appliance.memory import lock_memory; print(lock_memory())"
    done = subprocess.run(
        ["prlimit", "--memlock=65536:65536", "setpriv", "--inh-caps=-ipc_lock",
         "--bounding-set=-ipc_lock", sys.executable, "-c", code],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in ("Cannot allocate memory", "Operation not permitted")


def _swaps(tmp_path: Path, *areas: str) -> Path:
    path = tmp_path / "swaps"
    path.write_text(HEADER + "".join(f"{a}\tfile\t\t1048572\t\t0\t\t-2\n" for a in areas))
    return path


def _mapper(tmp_path: Path, name: str, dm: str, uuid: str) -> tuple[str, Path]:
    """A /dev/mapper/NAME -> dm-N link and a /sys with that device's dm uuid."""
    dev = tmp_path / "dev"
    (dev / "mapper").mkdir(parents=True, exist_ok=True)
    (dev / dm).write_bytes(b"")
    (dev / "mapper" / name).symlink_to(dev / dm)
    sys_dir = tmp_path / "sys"
    (sys_dir / "block" / dm / "dm").mkdir(parents=True)
    (sys_dir / "block" / dm / "dm" / "uuid").write_text(uuid + "\n")
    return str(dev / "mapper" / name), sys_dir


def test_no_swap_or_swap_on_dm_crypt_is_no_problem(tmp_path):
    sys_dir = tmp_path / "sys"
    sys_dir.mkdir()
    assert swap_problem(_swaps(tmp_path), sys_dir) is None
    area, sys_dir = _mapper(tmp_path, "cryptswap", "dm-3", "CRYPT-PLAIN-cryptswap")
    assert swap_problem(_swaps(tmp_path, area), sys_dir) is None


def test_swap_not_on_dm_crypt_is_a_problem_naming_it(tmp_path):
    area, sys_dir = _mapper(tmp_path, "vg-swap", "dm-1", "LVM-abcdef")
    plain = tmp_path / "var-swap"  # dphys-swapfile's /var/swap on the SD card
    plain.write_bytes(b"")
    problem = swap_problem(_swaps(tmp_path, area, str(plain)), sys_dir)
    assert problem == (f"unencrypted swap is active ({area}, {plain}) and memory could not be "
                       "locked; give the service LimitMEMLOCK=infinity, or turn that swap off")


def test_an_unreadable_swap_list_is_a_problem(tmp_path):
    assert swap_problem(tmp_path / "missing", tmp_path).startswith("cannot read")


def test_with_unencrypted_swap_and_no_lock_the_unit_will_not_arm(lab_template, tmp_path):
    plain = tmp_path / "var-swap"
    plain.write_bytes(b"")
    swaps = _swaps(tmp_path, str(plain))
    template, hw, spool = sim_unit(lab_template, tmp_path)

    async def main() -> None:
        unit = Unit(template.config, Roster(lab_template.roster_dir), spool,
                    hw, NOTICES, Ed25519PrivateKey.generate(), lambda: True,
                    checks={"memory": lambda: swap_problem(swaps, tmp_path)})
        await unit.press()
        assert unit.state is State.IDLE and unit.challenge is None
        assert unit.fault == "memory" and str(plain) in (unit.fault_reason or "")
        assert hw.parts.status_led.pattern is Pattern.FAULT
        swaps.write_text(HEADER)  # IT turned the swap off
        await unit.press()
        assert unit.state is State.ARMED and unit.fault is None
        await unit.stop()

    try:
        asyncio.run(main())
    finally:
        hw.close()

