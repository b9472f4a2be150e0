"""A stand-in journald for one process tree, run inside `unshare --mount` (root only):

    unshare --mount --propagation private python -m tests.journald_sink OUT.jsonl -- CMD...

Mounts a tmpfs on /run/systemd (inside the new mount namespace only), listens on
/run/systemd/journal/socket as journald does, runs CMD with its stderr on a file whose device and
inode are in $JOURNAL_STREAM (as systemd does), and writes each entry received, decoded from the
native protocol, as a JSON line with its arrival time (`_t`, monotonic). SIGTERM is passed on to
CMD; the sink exits when CMD does.
"""
from __future__ import annotations

import array
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

SOCKET = "/run/systemd/journal/socket"


def parse(data: bytes) -> dict[str, str]:
    """Fields of one native-protocol datagram."""
    fields, i = {}, 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            i = end + 1
        else:
            key = line
            (length,) = struct.unpack("<Q", data[end + 1:end + 9])
            value = data[end + 9:end + 9 + length]
            i = end + 9 + length + 1
        fields[key.decode()] = value.decode(errors="replace")
    return fields


def main(argv: list[str]) -> int:
    out, command = Path(argv[0]), argv[argv.index("--") + 1:]
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.makedirs("/run/systemd/journal")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(SOCKET)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    stderr = open(out.with_suffix(".stderr"), "wb")
    st = os.fstat(stderr.fileno())
    env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    child = subprocess.Popen(command, stderr=stderr, stdout=subprocess.DEVNULL, env=env)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    with open(out, "a") as entries:
        while child.poll() is None or select.select([sink], [], [], 0)[0]:
            if not select.select([sink], [], [], 0.05)[0]:
                continue
            fds = array.array("i")
            data, ancillary, _, _ = sink.recvmsg(65536, socket.CMSG_SPACE(4))
            for level, kind, payload in ancillary:  # a large entry comes as a memfd
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(payload[:4])
            for fd in fds:
                data = os.pread(fd, os.fstat(fd).st_size, 0)
                os.close(fd)
            entry = parse(data)
            entry["_t"] = time.monotonic()
            entries.write(json.dumps(entry) + "\n")
            entries.flush()
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
