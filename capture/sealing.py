"""The encryption sink: the last output in the capture chain, and the only one that touches disk.

    sink = SealingSink(directory, index=1, recipient="age1...")
    sink.write(ts_bytes)          # plaintext goes into a pipe, never to a file
    sealed = sink.finish()        # the whole ciphertext is on disk (fsynced), under its partial name
    sink.commit()                 # renamed into place: from here on the segment is sealed

Plaintext written here goes through an `os.pipe` to a thread running pyrage's streaming
`encrypt_io`, which writes age ciphertext to `.seg-NNNNNN.ts.age.partial`. `finish()` ends the
stream and fsyncs the ciphertext; the caller records the segment's hash, then `commit()` renames
it to `seg-NNNNNN.ts.age` and fsyncs the directory, so a segment is either whole and sealed (with
its record) or absent. A partial file holds only ciphertext and is deleted on recovery (P4).
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pyrage

from capture.devices import CaptureError, without_frames
from formats.manifest import segment_file
from formats.durable import fsync_dir

PARTIAL_SUFFIX = ".partial"
# pyrage reads its input 8 KiB at a time through Python; a 64 KiB pipe and 8 KiB buffers make
# that two syscalls and a thread switch per read. 1 MiB on both sides roughly doubles throughput
# (bench/capture_vs_ffmpeg.py), and is still small next to a frame.
BUFFER = 1 << 20


@dataclass(frozen=True)
class Sealed:
    """A segment file that is complete on disk."""

    path: Path
    sha256: str
    size: int


class SealingSink:
    """A write-only file object (what PyAV's muxer writes to) that encrypts as it is written."""

    def __init__(self, directory: Path, index: int, recipient: str):
        self.final = directory / segment_file(index)
        self.partial = directory / f".{self.final.name}{PARTIAL_SUFFIX}"
        self._hash = hashlib.sha256()
        self._size = 0
        self._error: BaseException | None = None
        self._out = open(os.open(self.partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb",
                         buffering=BUFFER)
        read_fd, write_fd = os.pipe()
        _widen(write_fd)
        self._reader = os.fdopen(read_fd, "rb", buffering=BUFFER)
        self._writer = os.fdopen(write_fd, "wb", buffering=0)
        self._thread = threading.Thread(target=self._encrypt, args=(recipient,),
                                        name=f"seal-{index}", daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> int:
        """Take all of `data` as plaintext, or raise CaptureError (the encryptor has failed,
        e.g. disk full, or the pipe took nothing). Never a short count: a gap here would be
        sealed, hashed and signed as if it were the recording."""
        view = memoryview(data).cast("B")
        try:
            while view:
                # The raw pipe may take part of a write (a signal, a full pipe); the rest goes next.
                taken = self._writer.write(view)
                if not taken:
                    raise OSError(errno.EIO, f"the encryptor's pipe took none of {len(view)} "
                                             "bytes")
                view = view[taken:]
        except (OSError, ValueError) as e:
            raise CaptureError(f"segment {self.final.name}: {self._error or e}") from e
        return len(data)

    def finish(self) -> Sealed:
        """End the segment: wait for the last ciphertext and make it durable (not yet named)."""
        self._finish()
        if self._error is not None:
            self.partial.unlink(missing_ok=True)
            raise CaptureError(f"segment {self.final.name}: {self._error}")
        return Sealed(self.final, self._hash.hexdigest(), self._size)

    def commit(self) -> None:
        """Give the finished segment its name: the moment it becomes sealed."""
        os.replace(self.partial, self.final)
        fsync_dir(self.final.parent)

    def abort(self) -> None:
        """Give up on this segment: its partial ciphertext is deleted."""
        self._finish()
        self.partial.unlink(missing_ok=True)

    def _finish(self) -> None:
        if not self._writer.closed:
            try:
                self._writer.close()
            except OSError:
                pass  # the encryptor already failed and closed its end; its error is kept
        self._thread.join()

    def _encrypt(self, recipient: str) -> None:
        try:
            pyrage.encrypt_io(self._reader, _Hashing(self), [pyrage.x25519.Recipient.from_str(recipient)])
            self._out.flush()
            os.fsync(self._out.fileno())
        except BaseException as e:  # kept and re-raised in the capture thread by seal()/write()
            self._error = without_frames(e)
        finally:
            self._reader.close()  # a writer still writing now gets EPIPE instead of blocking
            self._out.close()


class _Hashing:
    """Passes ciphertext to the file while hashing it (the hash the manifest and upload use)."""

    def __init__(self, sink: SealingSink):
        self._sink = sink

    def write(self, data: bytes) -> int:
        self._sink._hash.update(data)
        self._sink._size += len(data)
        return self._sink._out.write(data)


def _widen(fd: int) -> None:
    """Make a pipe hold `BUFFER` bytes (Linux); keep the default where that is refused."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, BUFFER)
    except (AttributeError, OSError):
        pass  # e.g. above /proc/sys/fs/pipe-max-size for an unprivileged user: only slower


def remove_partials(directory: Path) -> list[Path]:
    """Delete the unfinished (ciphertext) segments a crash left; returns what was removed."""
    removed = sorted(directory.glob(f".*{PARTIAL_SUFFIX}"))
    for path in removed:
        path.unlink()
    if removed:
        fsync_dir(directory)
    return removed
