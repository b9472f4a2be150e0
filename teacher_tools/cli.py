"""The `classcam` command.

On the teacher's computer:  classcam keys new [--security-key] | keys show | keys card |
                            keys reseal | account ls|get|rm | decrypt

More commands come from other installed distributions, found by name through the entry-point
group `classcam.commands` (each entry point is a function given a `Commands` to add to). The
unit's `classcam` (distribution `classcam`) adds run, check-config, roster, led-off, keys device
and token mint there; on a teacher's computer, without the daemon, none of them exist.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path
from collections.abc import Callable, Iterator

from formats import ids
from teacher_tools import __version__

COMMANDS_GROUP = "classcam.commands"

AddCommands = Callable[["Commands"], None]


def main(argv: list[str] | None = None, builtin: dict[str, AddCommands] | None = None) -> int:
    """Entry point of the `classcam` console script. `builtin` adds command groups by entry-point
    name without looking them up (`python -m appliance.cli` passes the unit's own)."""
    args = parser(builtin).parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"classcam: {e}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A command that cannot be carried out; the message is printed as one line."""


class Commands:
    """The `classcam` parser, as a command group adds to it.

        def add_commands(commands: Commands) -> None:          # an entry point's function
            run = commands.command("run", help="run the daemon")
            run.set_defaults(func=_run)
            device = commands.group("keys").add_parser("device", help="...")
    """

    def __init__(self, sub: argparse._SubParsersAction):
        self._sub = sub
        self._groups: dict[str, argparse._SubParsersAction] = {}

    def command(self, name: str, help: str) -> argparse.ArgumentParser:
        """A new top-level command `classcam NAME`."""
        return self._sub.add_parser(name, help=help)

    def group(self, name: str, help: str | None = None) -> argparse._SubParsersAction:
        """The actions of `classcam NAME ACTION`, made on first use, shared after."""
        if name not in self._groups:
            p = self._sub.add_parser(name, help=help)
            self._groups[name] = p.add_subparsers(required=True, metavar="ACTION")
        return self._groups[name]


def parser(builtin: dict[str, AddCommands] | None = None) -> argparse.ArgumentParser:
    """The whole command line: the teacher's commands, then every installed command group."""
    p = argparse.ArgumentParser(prog="classcam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"classcam {__version__}")
    commands = Commands(p.add_subparsers(required=True, metavar="COMMAND"))
    add_commands(commands)
    groups = dict(builtin or {})
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda ep: ep.name):
        if ep.name in groups:
            continue
        try:
            groups[ep.name] = ep.load()
        except Exception as e:  # a broken extra must not take the teacher's commands with it
            print(f"classcam: commands {ep.name} ({ep.value}) unavailable: {e}", file=sys.stderr)
    for name in sorted(groups):
        groups[name](commands)
    return p


def add_commands(commands: Commands) -> None:
    """The teacher's own commands: keys, decrypt, account."""
    keys = commands.group("keys", help="the teacher's own keys (run on the teacher's computer)")
    new = keys.add_parser("new", help="make a signing key, an encryption identity and a teacher card")
    new.add_argument("--teacher-id", required=True)
    new.add_argument("--name", help="display name (default: the teacher id)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write the files")
    new.add_argument("--passphrase-file", type=Path)
    new.add_argument("--force", action="store_true", help="overwrite existing key files")
    new.add_argument("--security-key", action="store_true",
                     help="also make a credential on your FIDO2 security key (plugged in, with "
                          "a PIN) and name it in the card: start recordings with the key")
    new.add_argument("--security-key-pin-file", type=Path,
                     help="the security key's PIN (default: $CLASSCAM_SECURITY_KEY_PIN, or asked)")
    new.set_defaults(func=_keys_new)
    reseal = keys.add_parser("reseal", help="seal your signing key again in today's form (scrypt)")
    reseal.add_argument("--key", type=Path, required=True, help="your <id>.signing.pem")
    reseal.add_argument("--passphrase-file", type=Path)
    reseal.set_defaults(func=_keys_reseal)
    show = keys.add_parser("show", help="show a teacher card and its fingerprint")
    show.add_argument("card", type=Path)
    show.set_defaults(func=_keys_show)
    card = keys.add_parser("card", help="re-sign a version 1 teacher card in today's format")
    card.add_argument("--card", type=Path, required=True, help="the old <id>.card.json")
    card.add_argument("--key", type=Path, required=True, help="your <id>.signing.pem")
    card.add_argument("--passphrase-file", type=Path)
    card.add_argument("-o", "--output", type=Path, help="where to write it (default: over --card)")
    card.set_defaults(func=_keys_card)

    dec = commands.command("decrypt", help="check a downloaded recording and join it into one video")
    dec.add_argument("directory", type=Path, help="the recording's files (segments and manifest)")
    dec.add_argument("-o", "--output", type=Path, required=True, help="the MP4 to write")
    dec.add_argument("--identity", type=Path, required=True, help="your <id>.identity.age")
    dec.add_argument("--passphrase-file", type=Path)
    dec.add_argument("--device-fingerprint", help="refuse unless the unit's key has this fingerprint")
    dec.add_argument("--trust-new-unit", action="store_true",
                     help="trust a unit not pinned and not known yet, and remember it (compare the "
                          "fingerprint printed with `classcam keys device` on the unit)")
    dec.add_argument("--recording-id",
                     help="refuse unless the files are this recording (default: the directory's "
                          "name, when it is a recording id, as `account get` names it)")
    dec.add_argument("--known-devices", type=Path,
                     help="units trusted so far (default ~/.config/classcam/known_devices.json)")
    dec.set_defaults(func=_decrypt)

    account = commands.group("account", help="your recordings on the account server")
    als = account.add_parser("ls", help="list your recordings")
    aget = account.add_parser("get", help="download a recording's files (then: classcam decrypt)")
    aget.add_argument("recording_id")
    aget.add_argument("-o", "--output", type=Path, help="directory (default: ./RECORDING_ID)")
    arm = account.add_parser("rm", help="delete a recording from the account")
    arm.add_argument("recording_id")
    for cmd, func in ((als, _account_ls), (aget, _account_get), (arm, _account_rm)):
        cmd.add_argument("--url", required=True, help="the account server, https://...")
        cmd.add_argument("--teacher-id", required=True)
        cmd.add_argument("--cert", type=Path, required=True, help="your account certificate")
        cmd.add_argument("--key", type=Path, required=True, help="its private key")
        cmd.add_argument("--ca", type=Path, help="the server's CA (default: the system's)")
        cmd.set_defaults(func=func)


def read_card(path: Path):
    """The verified teacher card at `path`; a UsageError says why not."""
    from formats.card import CardRejected, TeacherCard
    try:
        return TeacherCard.parse(path.read_bytes())
    except CardRejected as e:
        raise UsageError(f"{path}: refused: {e.reason}") from None
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


def _keys_new(args, security_keys: Callable[[], list] | None = None) -> int:
    """`classcam keys new`; `security_keys` lists the plugged-in keys (default: USB HID)."""
    from formats.card import CardRejected
    from teacher_tools import keys
    from teacher_tools.keys import KeyFileError, new_teacher_keys, read_passphrase
    device, pin = None, ""
    try:
        if args.security_key:
            found = (security_keys or keys.security_keys)()
            if not found:
                raise UsageError("no security key found: plug it in and try again")
            if len(found) > 1:
                raise UsageError("more than one security key is plugged in: leave only yours")
            device = found[0]
            pin = _security_key_pin(args.security_key_pin_file)
        passphrase = read_passphrase(args.passphrase_file, "New passphrase: ", confirm=True)
        if device is not None:
            print("touch your security key when it blinks", file=sys.stderr)
        card, files = new_teacher_keys(args.dir, args.teacher_id, args.name or args.teacher_id,
                                       passphrase, overwrite=args.force, security_key=device,
                                       security_key_pin=pin)
    except (KeyFileError, CardRejected, OSError) as e:
        raise UsageError(str(e)) from None
    print(f"teacher card:      {files.card}   (give this to IT)")
    print(f"signing key:       {files.signing_key}   (keep; protected by your passphrase)")
    print(f"decryption key:    {files.identity}   (keep; protected by your passphrase)")
    print(f"fingerprint:       {card.fingerprint}")
    if card.security_key is not None:
        print("security key:      enrolled (start recordings with it and its PIN)")
    return 0


def _security_key_pin(file: Path | None) -> str:
    import getpass
    import os
    if file is not None:
        return file.read_text(encoding="utf-8").rstrip("\n")
    if "CLASSCAM_SECURITY_KEY_PIN" in os.environ:
        return os.environ["CLASSCAM_SECURITY_KEY_PIN"]
    return getpass.getpass("Security key PIN: ")


def _keys_reseal(args) -> int:
    from teacher_tools.keys import KeyFileError, read_passphrase, reseal_signing_key
    try:
        reseal_signing_key(args.key, read_passphrase(args.passphrase_file))
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    print(f"signing key:       {args.key}   (sealed again with scrypt)")
    return 0


def _keys_show(args) -> int:
    card = read_card(args.card)
    print(json.dumps({"teacher_id": card.teacher_id, "name": card.name,
                      "recipient": card.recipient, "fingerprint": card.fingerprint,
                      "security_key": card.security_key is not None}, indent=2))
    return 0


def _keys_card(args) -> int:
    from formats.card import CardRejected, resign_v1
    from formats.durable import atomic_write
    from teacher_tools.keys import KeyFileError, load_signing_key, read_passphrase
    try:
        old = args.card.read_bytes()
        key = load_signing_key(args.key, read_passphrase(args.passphrase_file))
        card, data = resign_v1(old, key)
        output = args.output or args.card
        atomic_write(output, data)
    except CardRejected as e:
        raise UsageError(f"{args.card}: refused: {e.reason}") from None
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    print(f"teacher card:      {output}   (version 2; give this to IT)")
    print(f"fingerprint:       {card.fingerprint}   (unchanged)")
    return 0


def _decrypt(args) -> int:
    from teacher_tools.decrypt import KnownDevices, RecordingRefused, decrypt_recording
    from teacher_tools.keys import KeyFileError, load_identity, read_passphrase
    try:
        identity = load_identity(args.identity, read_passphrase(args.passphrase_file))
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    known = KnownDevices(args.known_devices) if args.known_devices else KnownDevices.default()
    recording_id = args.recording_id
    if recording_id is None and ids.is_recording_id(args.directory.resolve().name):
        recording_id = args.directory.resolve().name
    try:
        lesson = decrypt_recording(args.directory, identity, args.output, known,
                                   args.device_fingerprint, recording_id=recording_id,
                                   trust_new_unit=args.trust_new_unit)
    except RecordingRefused as e:
        for reason in e.reasons:
            print(f"classcam: {args.directory}: refused: {reason}", file=sys.stderr)
        return 1
    print(f"{lesson.output}: recording {lesson.recording_id}, {lesson.segments} segment(s), "
          f"{lesson.video_frames} frames, {lesson.seconds:.1f} s")
    trust = "first recording from this unit: remembered" if lesson.device_first_seen else "known"
    print(f"made by {lesson.device_id}, key {lesson.device_fingerprint} ({trust}; compare with "
          "`classcam keys device` on the unit)")
    if not lesson.complete:
        print(f"the unit restarted during this recording ({lesson.ended_by}): every segment "
              "sealed before that is here")
    elif lesson.ended_by.startswith("fault"):
        print(f"recording ended early: {lesson.ended_by}")
    return 0


@contextlib.contextmanager
def _account(args) -> Iterator:
    """The teacher's account; an `AccountError` becomes the command's one-line error."""
    from teacher_tools.account import Account, AccountError
    try:
        with Account(args.url, args.teacher_id, args.cert, args.key, args.ca) as account:
            yield account
    except AccountError as e:
        raise UsageError(e.reason) from None


def _account_ls(args) -> int:
    with _account(args) as account:
        recordings = account.recordings()
    for r in recordings:
        names = [f["name"] for f in r["files"]]
        size = sum(f["size"] for f in r["files"])
        whole = "manifest" if "manifest.age" in names else "no manifest yet"
        print(f"{r['recording_id']}\t{len(names)} file(s)\t{size / 1e6:.1f} MB\t{whole}")
    return 0


def _account_get(args) -> int:
    into = args.output or Path(args.recording_id)
    with _account(args) as account:
        paths = account.download(args.recording_id, into)
    print(f"{into}: {len(paths)} file(s), each checked against the account's SHA-256")
    return 0


def _account_rm(args) -> int:
    with _account(args) as account:
        account.delete(args.recording_id)
    print(f"deleted {args.recording_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
