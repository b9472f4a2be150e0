"""`classcam-pinpad`: the PIN pad service and IT's commands for its keystore.

    classcam-pinpad run                                   the service (systemd runs this)
    classcam-pinpad enrol --card CARD [--signing-key KEY] [--number N]
    classcam-pinpad list                                  numbers, teachers, key kind, locked
    classcam-pinpad reset TEACHER                         unlock after too many wrong PINs
    classcam-pinpad remove TEACHER                        take a teacher off the pad

TEACHER is a teacher id or number. Every command takes `--config` (default
/etc/classcam/pinpad.toml). `enrol` asks for the passphrase of the teacher's signing key
($CLASSCAM_PASSPHRASE or --passphrase-file) and, twice, for the PIN the teacher chooses
($CLASSCAM_PIN or --pin-file); with a card that names a security key it needs neither.
"""
from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import signal
import sys
from pathlib import Path

from formats.card import CardRejected
from pinpad import config as pad_config
from pinpad.feedback import Feedback, ToneFeedback
from pinpad.keypad import open_keypad
from pinpad.keystore import MAX_WRONG_PINS, Keystore, PadRefusal, check_pin
from pinpad.link import UnitLink
from pinpad.security_key import list_devices
from pinpad.service import PadService, Timing, security_key_signer
from teacher_tools.keys import KeyFileError, load_signing_key, read_passphrase

EX_CONFIG = 78


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `classcam-pinpad` console script."""
    args = _parser().parse_args(argv)
    try:
        config = pad_config.load(args.config)
    except pad_config.ConfigError as e:
        print(f"classcam-pinpad: {e}", file=sys.stderr)
        return EX_CONFIG
    try:
        return args.func(args, config)
    except (PadRefusal, CardRejected, KeyFileError, OSError) as e:
        print(f"classcam-pinpad: {e}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="classcam-pinpad", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=pad_config.DEFAULT_PATH)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")
    sub.add_parser("run", help="run the pad service").set_defaults(func=_run)
    enrol = sub.add_parser("enrol", help="put a teacher on the pad")
    enrol.add_argument("--card", type=Path, required=True)
    enrol.add_argument("--signing-key", type=Path,
                       help="the teacher's signing key file (not for a security-key card)")
    enrol.add_argument("--number", type=int, help="the teacher number (default: lowest free)")
    enrol.add_argument("--passphrase-file", type=Path)
    enrol.add_argument("--pin-file", type=Path)
    enrol.set_defaults(func=_enrol)
    sub.add_parser("list", help="the teachers on the pad").set_defaults(func=_list)
    for name, func, text in (("reset", _reset, "unlock a key locked by wrong PINs"),
                             ("remove", _remove, "take a teacher off the pad")):
        p = sub.add_parser(name, help=text)
        p.add_argument("teacher", help="teacher id or number")
        p.set_defaults(func=func)
    return parser


def _run(args: argparse.Namespace, config: pad_config.PadConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    service = PadService(
        Keystore(config.keystore), UnitLink(config.socket), lambda: open_keypad(config.keypad),
        ToneFeedback() if config.feedback == "tones" else Feedback(),
        security_key=security_key_signer(list_devices) if config.security_keys else None,
        timing=Timing(config.challenge_wait_s, config.result_timeout_s, config.entry_timeout_s))

    async def serve() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await service.run()
        except asyncio.CancelledError:
            pass

    asyncio.run(serve())
    return 0


def _enrol(args: argparse.Namespace, config: pad_config.PadConfig) -> int:
    store = Keystore(config.keystore)
    card = args.card.read_bytes()
    key = pin = None
    if args.signing_key is not None:
        key = load_signing_key(args.signing_key, read_passphrase(
            args.passphrase_file, "Passphrase of the teacher's signing key: "))
        pin = check_pin(_read_pin(args.pin_file))
    number = store.enrol(card, key, pin, args.number)
    teacher = store.teacher(number)
    print(f"{teacher.card.teacher_id} is teacher number {number} on this pad "
          f"({'key on the pad' if teacher.key_on_pad else 'security key'})")
    return 0


def _list(args: argparse.Namespace, config: pad_config.PadConfig) -> int:
    for t in Keystore(config.keystore).teachers():
        kind = "key on the pad" if t.key_on_pad else "security key"
        state = (f"LOCKED ({t.wrong_pins} wrong PINs)" if t.locked
                 else f"{t.wrong_pins}/{MAX_WRONG_PINS} wrong PINs" if t.key_on_pad else "")
        print(f"{t.number:>3}  {t.card.teacher_id}  {t.card.name}  {kind}  {state}".rstrip())
    return 0


def _reset(args: argparse.Namespace, config: pad_config.PadConfig) -> int:
    store = Keystore(config.keystore)
    number = store.number_of(args.teacher)
    store.reset(number)
    print(f"teacher {number}: wrong-PIN count set to 0")
    return 0


def _remove(args: argparse.Namespace, config: pad_config.PadConfig) -> int:
    store = Keystore(config.keystore)
    number = store.number_of(args.teacher)
    store.remove(number)
    print(f"teacher {number} removed from the pad")
    return 0


def _read_pin(file: Path | None) -> str:
    if file is not None:
        return file.read_text().strip()
    if "CLASSCAM_PIN" in os.environ:
        return os.environ["CLASSCAM_PIN"]
    first = getpass.getpass("The teacher's new PIN (6 to 12 digits): ")
    if getpass.getpass("Again: ") != first:
        raise PadRefusal("the PINs differ")
    return first


if __name__ == "__main__":
    sys.exit(main())
