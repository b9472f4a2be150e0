"""The pad's keystore (pinpad/keystore.py): 6-digit PINs at least, an Argon2id seal, and a
wrong-PIN count written durably before each try that locks the key after MAX_WRONG_PINS, across
restarts, until IT resets it."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from formats.card import TeacherCard
from pinpad import keystore as ks
from pinpad.keystore import MAX_WRONG_PINS, Keystore, PadRefusal

PIN = "482913"
# How much slower one Argon2id guess is on a Raspberry Pi 4 (Cortex-A72, 1.5 GHz) than on this
# PC's core, for the README's estimate: memory-bound Argon2 runs 3-5x slower there (single-core
# memory bandwidth ~4 GB/s against 15-20); 4 is taken.
PI4_FACTOR = 4


@pytest.fixture
def teacher(tmp_path):
    key = Ed25519PrivateKey.generate()
    recipient = str(pyrage.x25519.Identity.generate().to_public())
    _, card = TeacherCard.create("t-evans", "Ms Evans", key, recipient)
    return key, card


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


@pytest.mark.parametrize("pin", ["48291", "1234", "", "48291x", "４８２９１３", "1" * 13])
def test_enrolment_refuses_a_pin_shorter_than_six_digits_or_not_digits(tmp_path, teacher, pin):
    key, card = teacher
    with pytest.raises(PadRefusal) as refused:
        Keystore(tmp_path / "pad").enrol(card, key, pin)
    assert "digits" in refused.value.reason
    assert Keystore(tmp_path / "pad").teachers() == []


def test_the_sealed_key_opens_with_its_pin_only_and_holds_no_key_bytes(tmp_path, teacher):
    key, card = teacher
    store = Keystore(tmp_path / "pad")
    number = store.enrol(card, key, PIN)
    assert number == 1
    sealed = (tmp_path / "pad" / "1" / "key.sealed").read_bytes()
    assert _raw(key) not in sealed and b'"argon2id"' in sealed
    assert _raw(store.unlock(1, PIN)) == _raw(key)
    assert oct((tmp_path / "pad").stat().st_mode & 0o777) == "0o700"
    for name in ("card.json", "key.sealed", "wrong_pins"):
        assert oct((tmp_path / "pad" / "1" / name).stat().st_mode & 0o777) == "0o600", name


def test_a_key_that_is_not_the_cards_is_refused(tmp_path, teacher):
    _, card = teacher
    with pytest.raises(PadRefusal, match="not the one in the card"):
        Keystore(tmp_path / "pad").enrol(card, Ed25519PrivateKey.generate(), PIN)


def test_wrong_pins_lock_the_key_across_restarts_until_it_reset(tmp_path, teacher, monkeypatch):
    key, card = teacher
    Keystore(tmp_path / "pad").enrol(card, key, PIN)
    for attempt in range(MAX_WRONG_PINS):
        store = Keystore(tmp_path / "pad")  # a new service process each time
        with pytest.raises(PadRefusal, match="wrong PIN"):
            store.unlock(1, f"{attempt:06d}")
    # Locked: the right PIN no longer opens it, and no key derivation is even tried.
    monkeypatch.setattr(ks, "derive", lambda *a, **k: pytest.fail("KDF run on a locked key"))
    with pytest.raises(PadRefusal, match="locked"):
        Keystore(tmp_path / "pad").unlock(1, PIN)
    assert Keystore(tmp_path / "pad").teacher(1).locked
    monkeypatch.undo()
    # IT resets it, with the command the README names.
    config = tmp_path / "pinpad.toml"
    config.write_text(f'keystore = "{tmp_path / "pad"}"\n')
    reset = subprocess.run([sys.executable, "-m", "pinpad.cli", "--config", str(config),
                            "reset", "t-evans"], capture_output=True, text=True, timeout=60)
    assert reset.returncode == 0, reset.stderr
    assert _raw(Keystore(tmp_path / "pad").unlock(1, PIN)) == _raw(key)


def test_a_right_pin_sets_the_count_back(tmp_path, teacher):
    key, card = teacher
    store = Keystore(tmp_path / "pad")
    store.enrol(card, key, PIN)
    for _ in range(MAX_WRONG_PINS - 1):
        with pytest.raises(PadRefusal):
            store.unlock(1, "000000")
    store.unlock(1, PIN)
    assert store.teacher(1).wrong_pins == 0


def test_a_try_killed_during_the_kdf_is_still_counted(tmp_path, teacher):
    # The count is on disk (fsynced) before the key derivation starts: pulling the plug, or
    # SIGKILL, in the middle of a guess does not give a free guess.
    key, card = teacher
    Keystore(tmp_path / "pad").enrol(card, key, PIN)
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from pinpad import keystore\n"
        "keystore.derive = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "keystore.Keystore(Path(sys.argv[1])).unlock(1, '111111')\n")
    killed = subprocess.run([sys.executable, "-c", script, str(tmp_path / "pad")], timeout=60)
    assert killed.returncode == -9
    assert Keystore(tmp_path / "pad").teacher(1).wrong_pins == 1


def test_a_damaged_count_locks_rather_than_unlocks(tmp_path, teacher):
    key, card = teacher
    Keystore(tmp_path / "pad").enrol(card, key, PIN)
    (tmp_path / "pad" / "1" / "wrong_pins").write_text("")  # truncated
    with pytest.raises(PadRefusal, match="locked"):
        Keystore(tmp_path / "pad").unlock(1, PIN)


def test_one_guess_costs_a_memory_hard_kdf(capsys):
    # The README's offline search time comes from this measurement.
    assert ks.KDF["kdf"] == "argon2id" and ks.KDF["memory_kib"] >= 64 * 1024
    assert ks.KDF["iterations"] >= 3
    salt = os.urandom(16)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        ks.derive("482913", salt)
        times.append(time.perf_counter() - start)
    guess = min(times)
    pins = 10 ** ks.MIN_PIN_DIGITS
    with capsys.disabled():
        print(f"\none Argon2id guess ({ks.KDF}): {guess:.3f} s on this {os.cpu_count()}-core "
              f"machine; all {pins} six-digit PINs: {pins * guess / 86400:.1f} days here, "
              f"{pins * guess * PI4_FACTOR / 86400:.1f} days on one Pi 4 (x{PI4_FACTOR})")
    # Far from PBKDF2's 2 s for all 4-digit PINs: at least 20 ms of work and 64 MiB per guess.
    assert guess > 0.02
