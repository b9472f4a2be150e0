"""Reading recordings back in tests: decrypt in memory, decode, read the frame counters."""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass, field
from pathlib import Path

import av
import pyrage

from teacher_tools.keys import load_identity
from hwsim.capture import read_counter
from hwsim.lab import PASSPHRASE, Lab

# Signatures of plaintext media: an H.264 SPS NAL after a start code, an AAC ADTS header, and
# three MPEG-TS packets in a row (sync byte 0x47 every 188 bytes).
H264_SPS = b"\x00\x00\x00\x01\x67"


def identity(lab: Lab, teacher: str = "t-evans") -> pyrage.x25519.Identity:
    """The teacher's identity, unlocked once per key file (scrypt takes a second each time)."""
    return _unlock(str(lab.key_files(teacher).identity))


@functools.cache
def _unlock(path: str) -> pyrage.x25519.Identity:
    return load_identity(Path(path), PASSPHRASE)


def recording_dirs(lab: Lab) -> list[Path]:
    spool = lab.state_dir / "spool"
    return sorted((p for p in spool.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: (p / "recording.json").stat().st_mtime)


def spool_contents(lab: Lab) -> list[str]:
    """Every name in the spool but its upload journal: recordings, and anything left over."""
    return sorted(p.name for p in (lab.state_dir / "spool").iterdir()
                  if not p.name.startswith(JOURNAL))


JOURNAL = "journal.db"  # with its -wal and -shm files


@dataclass
class Decoded:
    counters: list[int] = field(default_factory=list)
    audio_samples: int = 0
    audio_rate: int = 0
    segments_start_on_keyframe: list[bool] = field(default_factory=list)
    video_codec: str = ""
    audio_codec: str = ""


def decode_segments(directory: Path, ident: pyrage.x25519.Identity) -> Decoded:
    """Decrypt each sealed segment in memory and decode it, in index order."""
    out = Decoded()
    for path in sorted(directory.glob("seg-*.ts.age")):
        plain = pyrage.decrypt(path.read_bytes(), [ident])
        with av.open(io.BytesIO(plain)) as container:
            video, audio = container.streams.video[0], container.streams.audio[0]
            out.video_codec, out.audio_codec = video.codec_context.name, audio.codec_context.name
            out.audio_rate = audio.rate
            first = True
            for packet in container.demux(video, audio):
                if packet.dts is None:
                    continue
                if packet.stream is video and first:
                    out.segments_start_on_keyframe.append(packet.is_keyframe)
                    first = False
                for frame in packet.decode():
                    if packet.stream is video:
                        out.counters.append(read_counter(frame.to_ndarray(format="bgr24")))
                    else:
                        out.audio_samples += frame.samples
    return out


def looks_like_plaintext_media(data: bytes) -> str | None:
    """Why `data` looks like unencrypted media, or None."""
    if H264_SPS in data:
        return "H.264 SPS"
    i = data.find(b"\x47")
    while 0 <= i < len(data) - 376:
        if data[i + 188] == 0x47 and data[i + 376] == 0x47 and data[i + 564:i + 565] == b"\x47":
            return f"MPEG-TS packets at offset {i}"
        i = data.find(b"\x47", i + 1)
    return None
