"""The `classcam` command.

On the unit (IT):      classcam run | check-config | doctor | roster add|list|remove | led-off
On the teacher's PC:   classcam keys new | keys show | account ls|get|rm | decrypt
On the unit (teacher): classcam keys device   (the fingerprint manifests are checked against)
For pads and tests:    classcam token mint
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Iterator

from appliance import __version__
from appliance.config import DEFAULT_PATH, Config, ConfigError, load


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `classcam` console script."""
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"classcam: {e}", file=sys.stderr)
        return 2


class UsageError(Exception):
    """A command that cannot be carried out; the message is printed as one line."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classcam", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"classcam {__version__}")
    sub = p.add_subparsers(required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    _config_arg(run)
    run.add_argument("--hw", choices=["pi", "sim"], help="hardware backends (default $CLASSCAM_HW or pi)")
    run.set_defaults(func=_run)

    check = sub.add_parser("check-config", help="validate the configuration and exit")
    _config_arg(check)
    check.set_defaults(func=_check_config)

    doctor = sub.add_parser("doctor", help="say what this unit still needs before it can run")
    _config_arg(doctor)
    doctor.set_defaults(func=_doctor)

    keys = sub.add_parser("keys", help="the teacher's own keys (run on the teacher's computer)")
    ksub = keys.add_subparsers(required=True, metavar="ACTION")
    new = ksub.add_parser("new", help="make a signing key, an encryption identity and a teacher card")
    new.add_argument("--teacher-id", required=True)
    new.add_argument("--name", help="display name (default: the teacher id)")
    new.add_argument("--dir", type=Path, default=Path("."), help="where to write the files")
    new.add_argument("--passphrase-file", type=Path)
    new.add_argument("--force", action="store_true", help="overwrite existing key files")
    new.set_defaults(func=_keys_new)
    show = ksub.add_parser("show", help="show a teacher card and its fingerprint")
    show.add_argument("card", type=Path)
    show.set_defaults(func=_keys_show)
    device = ksub.add_parser("device", help="show this unit's manifest-signing key fingerprint")
    _config_arg(device)
    device.set_defaults(func=_keys_device)

    dec = sub.add_parser("decrypt", help="check a downloaded recording and join it into one video")
    dec.add_argument("directory", type=Path, help="the recording's files (segments and manifest)")
    dec.add_argument("-o", "--output", type=Path, required=True, help="the MP4 to write")
    dec.add_argument("--identity", type=Path, required=True, help="your <id>.identity.age")
    dec.add_argument("--passphrase-file", type=Path)
    dec.add_argument("--device-fingerprint", help="refuse unless the unit's key has this fingerprint")
    dec.add_argument("--known-devices", type=Path,
                     help="units trusted so far (default ~/.config/classcam/known_devices.json)")
    dec.set_defaults(func=_decrypt)

    account = sub.add_parser("account", help="your recordings on the account server")
    asub = account.add_subparsers(required=True, metavar="ACTION")
    als = asub.add_parser("ls", help="list your recordings")
    aget = asub.add_parser("get", help="download a recording's files (then: classcam decrypt)")
    aget.add_argument("recording_id")
    aget.add_argument("-o", "--output", type=Path, help="directory (default: ./RECORDING_ID)")
    arm = asub.add_parser("rm", help="delete a recording from the account")
    arm.add_argument("recording_id")
    for cmd, func in ((als, _account_ls), (aget, _account_get), (arm, _account_rm)):
        cmd.add_argument("--url", required=True, help="the account server, https://...")
        cmd.add_argument("--teacher-id", required=True)
        cmd.add_argument("--cert", type=Path, required=True, help="your account certificate")
        cmd.add_argument("--key", type=Path, required=True, help="its private key")
        cmd.add_argument("--ca", type=Path, help="the server's CA (default: the system's)")
        cmd.set_defaults(func=func)

    roster = sub.add_parser("roster", help="teachers enrolled on this unit")
    rsub = roster.add_subparsers(required=True, metavar="ACTION")
    add = rsub.add_parser("add", help="enrol a teacher card")
    add.add_argument("card", type=Path)
    add.add_argument("--replace", action="store_true", help="replace a card with another key")
    lst = rsub.add_parser("list", help="list enrolled teachers")
    rm = rsub.add_parser("remove", help="unenrol a teacher")
    rm.add_argument("teacher_id")
    for cmd, func in ((add, _roster_add), (lst, _roster_list), (rm, _roster_remove)):
        _config_arg(cmd)
        cmd.add_argument("--roster-dir", type=Path, help="instead of the configured roster_dir")
        cmd.set_defaults(func=func)

    token = sub.add_parser("token", help="start tokens")
    tsub = token.add_subparsers(required=True, metavar="ACTION")
    mint = tsub.add_parser("mint", help="mint a token, as a PIN pad does")
    mint.add_argument("--key", type=Path, required=True, help="the teacher's signing.pem")
    mint.add_argument("--card", type=Path, required=True, help="the teacher's card.json")
    mint.add_argument("--device", required=True, help="the unit's device id")
    mint.add_argument("--nonce", required=True, help="the unit's current challenge")
    mint.add_argument("--act", choices=["start", "discard"], default="start")
    mint.add_argument("--lifetime", type=int, default=60, help="seconds, at most 120")
    mint.add_argument("--passphrase-file", type=Path)
    mint.set_defaults(func=_token_mint)

    led = sub.add_parser("led-off", help="force the recording LED off (systemd ExecStopPost)")
    _config_arg(led)
    led.set_defaults(func=_led_off)
    return p


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=DEFAULT_PATH, help=f"default {DEFAULT_PATH}")


def _config(args) -> Config:
    try:
        return load(args.config)
    except ConfigError as e:
        raise UsageError(str(e)) from None


def _run(args) -> int:
    from appliance.daemon import run
    from appliance.hardware import hardware_kind
    try:
        kind = hardware_kind(args.hw)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return run(args.config, kind)


def _check_config(args) -> int:
    config = _config(args)
    print(f"{args.config}: ok (device {config.device.id})")
    return 0


def _doctor(args) -> int:
    from appliance.doctor import main as doctor
    return doctor(args.config)


def _keys_new(args) -> int:
    from appliance.keys import KeyFileError, new_teacher_keys, read_passphrase
    from appliance.roster import CardRejected
    try:
        passphrase = read_passphrase(args.passphrase_file, "New passphrase: ", confirm=True)
        card, files = new_teacher_keys(args.dir, args.teacher_id, args.name or args.teacher_id,
                                       passphrase, overwrite=args.force)
    except (KeyFileError, CardRejected, OSError) as e:
        raise UsageError(str(e)) from None
    print(f"teacher card:      {files.card}   (give this to IT)")
    print(f"signing key:       {files.signing_key}   (keep; protected by your passphrase)")
    print(f"decryption key:    {files.identity}   (keep; protected by your passphrase)")
    print(f"fingerprint:       {card.fingerprint}")
    return 0


def _keys_show(args) -> int:
    card = _read_card(args.card)
    print(json.dumps({"teacher_id": card.teacher_id, "name": card.name,
                      "recipient": card.recipient, "fingerprint": card.fingerprint}, indent=2))
    return 0


def _keys_device(args) -> int:
    from appliance.device_key import DeviceKeyError, load
    from capture.keyformat import fingerprint
    state_dir = _config(args).device.state_dir
    try:
        key = load(state_dir)
    except DeviceKeyError as e:
        raise UsageError(str(e)) from None
    print(f"device {_config(args).device.id}: manifest key fingerprint "
          f"{fingerprint(key.public_key())}")
    return 0


def _decrypt(args) -> int:
    from appliance.decrypt import KnownDevices, RecordingRefused, decrypt_recording
    from appliance.keys import KeyFileError, load_identity, read_passphrase
    try:
        identity = load_identity(args.identity, read_passphrase(args.passphrase_file))
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    known = KnownDevices(args.known_devices) if args.known_devices else KnownDevices.default()
    try:
        lesson = decrypt_recording(args.directory, identity, args.output, known,
                                   args.device_fingerprint)
    except RecordingRefused as e:
        for reason in e.reasons:
            print(f"classcam: {args.directory}: refused: {reason}", file=sys.stderr)
        return 1
    print(f"{lesson.output}: {lesson.segments} segment(s), {lesson.video_frames} frames, "
          f"{lesson.seconds:.1f} s")
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
    from appliance.account import Account, AccountError
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


def _roster(args):
    from appliance.roster import Roster
    directory = args.roster_dir or _config(args).device.roster_dir
    if not directory.is_dir():
        raise UsageError(f"roster directory {directory} does not exist")
    return Roster(directory)


def _roster_add(args) -> int:
    from appliance.roster import CardRejected
    try:
        card = _roster(args).add(args.card.read_bytes(), replace=args.replace)
    except CardRejected as e:
        raise UsageError(f"{args.card}: refused: {e.reason}") from None
    except OSError as e:
        raise UsageError(f"{args.card}: {e.strerror}") from None
    print(f"enrolled {card.teacher_id} ({card.name}), fingerprint {card.fingerprint}")
    return 0


def _roster_list(args) -> int:
    for card in _roster(args).cards():
        print(f"{card.teacher_id}\t{card.name}\t{card.fingerprint}")
    return 0


def _roster_remove(args) -> int:
    if not _roster(args).remove(args.teacher_id):
        raise UsageError(f"{args.teacher_id} is not enrolled")
    print(f"removed {args.teacher_id}")
    return 0


def _token_mint(args) -> int:
    from appliance.keys import KeyFileError, load_signing_key, read_passphrase
    from appliance.token import MAX_LIFETIME_S, mint
    if not 0 < args.lifetime <= MAX_LIFETIME_S:
        raise UsageError(f"--lifetime must be 1 to {MAX_LIFETIME_S} seconds")
    card = _read_card(args.card)
    try:
        key = load_signing_key(args.key, read_passphrase(args.passphrase_file))
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    print(mint(key, card.teacher_id, args.device, args.nonce, card.recipient, args.act,
               args.lifetime))
    return 0


def _led_off(args) -> int:
    import gpiozero
    config = _config(args)
    led = gpiozero.LED(config.gpio.recording_led_pin)
    led.off()
    led.close()
    return 0


def _read_card(path: Path):
    from appliance.roster import CardRejected, TeacherCard
    try:
        return TeacherCard.parse(path.read_bytes())
    except CardRejected as e:
        raise UsageError(f"{path}: refused: {e.reason}") from None
    except OSError as e:
        raise UsageError(f"{path}: {e.strerror}") from None


if __name__ == "__main__":
    sys.exit(main())
