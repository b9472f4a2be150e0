"""Durable file operations: a file is either wholly there or not there, across a power cut.

Used on the unit and on the teacher's own computer, so nothing here is POSIX-only: where the
system cannot open a directory (Windows), a directory's entries are made durable by the file
system itself and `fsync_dir` does nothing."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write `data` to `path` via a fsynced temporary file and a rename, then fsync the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0)
    with open(os.open(tmp, flags, mode), "wb") as f:
        f.write(data)
        f.flush()
        if hasattr(os, "fchmod"):  # exactly `mode`, whatever the umask; Windows keeps no such bits
            os.fchmod(f.fileno(), mode)
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable (a no-op where a directory cannot be
    opened, as on Windows)."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
