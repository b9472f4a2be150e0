"""P4: the daemon's memory (frames, samples, keys of sealing streams) never reaches swap.

    locked = lock_memory()          # at start-up: None, or why memory could not be locked
    problem = swap_problem()        # before every arm when it could not: None, or why not

The daemon locks all its memory, present and future, with `mlockall` (the unit file gives it
`LimitMEMLOCK=infinity`): locked pages are never swapped, whatever the kernel's cgroup settings
(Raspberry Pi kernels boot with the memory cgroup disabled, so `MemorySwapMax=0` does nothing).
`MCL_ONFAULT` locks pages as they are first touched rather than all at once, so thread stacks
and reserved arenas cost only what is used. If locking fails (no limit given, or too low), the
unit refuses to arm while any swap is active that is not on an encrypted (dm-crypt) device or
in RAM (zram): a fault on the status light with the reason in the journal.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import stat
from pathlib import Path

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4


def lock_memory() -> str | None:
    """Lock every page of the process, now and later, into RAM; None, or why it failed."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0:
        return None
    return os.strerror(ctypes.get_errno())


def swap_problem(proc_swaps: Path = Path("/proc/swaps"), sys: Path = Path("/sys")) -> str | None:
    """Why swap could hold the daemon's memory in plaintext, or None: the swap areas in use
    that are neither dm-crypt devices nor zram."""
    try:
        lines = proc_swaps.read_text().splitlines()[1:]
    except OSError as e:
        return f"cannot read {proc_swaps}: {e.strerror}"
    plain = [fields[0] for fields in (line.split() for line in lines)
             if fields and not _encrypted_or_ram(fields[0].replace("\\040", " "), sys)]
    if not plain:
        return None
    return (f"unencrypted swap is active ({', '.join(plain)}) and memory could not be locked; "
            "give the service LimitMEMLOCK=infinity, or turn that swap off")


def _encrypted_or_ram(area: str, sys: Path) -> bool:
    """Whether the swap area `area` (a device or a file) lies in RAM or on dm-crypt."""
    try:
        st = os.stat(area)
    except OSError:
        return False
    device = st.st_rdev if os.path.isabs(area) and _is_block(st.st_mode) else st.st_dev
    name = _block_name(os.major(device), os.minor(device), sys)
    if name is None:
        name = Path(os.path.realpath(area)).name
    if name.startswith("zram"):
        return True
    uuid = sys / "block" / name / "dm" / "uuid"
    try:
        return uuid.read_text().startswith("CRYPT-")
    except OSError:
        return False


def _is_block(mode: int) -> bool:
    return stat.S_ISBLK(mode)


def _block_name(major: int, minor: int, sys: Path) -> str | None:
    """The kernel's name of block device major:minor (e.g. "dm-0"), from /sys/dev/block."""
    link = sys / "dev" / "block" / f"{major}:{minor}"
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None
