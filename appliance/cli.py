"""The unit's commands of `classcam`, added to the teacher's `classcam` (teacher_tools/cli.py)
through the entry-point group `classcam.commands`:

On the unit (IT):      classcam run | check-config | doctor | roster add|list|remove | led-off
                       classcam notice-sheet   (the door notice and the data-protection fact sheet)
                       classcam zones preview --out zones.png   (one zoned frame, on a token)
On IT's computer:      classcam fleet
On the unit (teacher): classcam keys device   (the fingerprint manifests are checked against)
For pads and tests:    classcam token mint

`python -m appliance.cli ...` runs the whole command, these included, without the entry point.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from appliance.config import DEFAULT_PATH, Config, ConfigError, load
from teacher_tools.cli import Commands, UsageError, read_card
from teacher_tools.cli import main as classcam_main


def main(argv: list[str] | None = None) -> int:
    """`classcam` with the unit's commands, whether or not their entry point is installed."""
    return classcam_main(argv, builtin={"unit": add_commands})


def add_commands(sub: Commands) -> None:
    """The `classcam.commands` entry point of the daemon's distribution."""
    run = sub.command("run", help="run the daemon")
    _config_arg(run)
    run.add_argument("--hw", help="hardware backends by name, e.g. pi or sim "
                                  "(default $CLASSCAM_HW or pi)")
    run.set_defaults(func=_run)

    check = sub.command("check-config", help="validate the configuration and exit")
    _config_arg(check)
    check.set_defaults(func=_check_config)

    ksub = sub.group("keys")
    device = ksub.add_parser("device", help="show this unit's manifest-signing key fingerprint")
    _config_arg(device)
    device.set_defaults(func=_keys_device)

    rsub = sub.group("roster", help="teachers enrolled on this unit")
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

    tsub = sub.group("token", help="start tokens")
    mint = tsub.add_parser("mint", help="mint a token, as a PIN pad does")
    mint.add_argument("--key", type=Path, required=True, help="the teacher's signing.pem")
    mint.add_argument("--card", type=Path, required=True, help="the teacher's card.json")
    mint.add_argument("--device", required=True, help="the unit's device id")
    mint.add_argument("--nonce", required=True, help="the unit's current challenge")
    mint.add_argument("--act", choices=["start", "discard"], default="start")
    mint.add_argument("--lifetime", type=int, default=60, help="seconds, at most 120")
    mint.add_argument("--passphrase-file", type=Path)
    mint.set_defaults(func=_token_mint)

    doc = sub.command("doctor", help="what the unit still needs, then the health checks with "
                                     "their fixes")
    _config_arg(doc)
    doc.add_argument("--setup", action="store_true",
                     help="only what the unit needs before its daemon may run: reads files, "
                          "asks no daemon and no server (the Debian package's postinst)")
    doc.set_defaults(func=_doctor)

    fleet = sub.command("fleet", help="every unit's health, from the MQTT broker (for IT)")
    fleet.add_argument("--broker", required=True, help="the broker's host name")
    fleet.add_argument("--port", type=int, default=8883)
    fleet.add_argument("--ca", type=Path, help="the broker's CA (default: the system's)")
    fleet.add_argument("--username", help="IT's account on the broker")
    fleet.add_argument("--password-file", type=Path,
                       help="its password (default: $CLASSCAM_MQTT_PASSWORD)")
    fleet.add_argument("--cert", type=Path, help="or a client certificate ...")
    fleet.add_argument("--key", type=Path, help="... and its key")
    fleet.add_argument("--wait", type=float, default=5.0,
                       help="seconds to wait for the retained messages (default 5)")
    fleet.add_argument("--json", action="store_true", help="JSON for monitoring systems")
    fleet.set_defaults(func=_fleet)

    sheet = sub.command("notice-sheet", help="make the room notice for the door and the fact "
                                             "sheet for the data-protection lead, from the config")
    _config_arg(sheet)
    sheet.add_argument("--lang", choices=["en", "cy", "both"], default="both",
                       help="English, Welsh, or both (default; in the order of notice.languages)")
    sheet.add_argument("--format", choices=["pdf", "png"], default="pdf")
    sheet.add_argument("-o", "--output", type=Path, default=Path("."),
                       help="the folder for room-notice.FORMAT and fact-sheet.FORMAT (default .)")
    sheet.set_defaults(func=_notice_sheet)

    zsub = sub.group("zones")
    zp = zsub.add_parser("preview", help="one frame with the privacy zones filled, as a PNG "
                                         "here; a teacher presents a token at the pad first")
    _config_arg(zp)
    zp.add_argument("--out", type=Path, required=True, help="the PNG to write (mode 0600)")
    zp.set_defaults(func=_zones_preview)

    led = sub.command("led-off", help="force the recording LED off (systemd ExecStopPost)")
    _config_arg(led)
    led.set_defaults(func=_led_off)


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


def _keys_device(args) -> int:
    from appliance.device_key import DeviceKeyError, load
    from formats.keytext import fingerprint
    state_dir = _config(args).device.state_dir
    try:
        key = load(state_dir)
    except DeviceKeyError as e:
        raise UsageError(str(e)) from None
    print(f"device {_config(args).device.id}: manifest key fingerprint "
          f"{fingerprint(key.public_key())}")
    return 0


def _roster(args):
    from appliance.roster import Roster
    directory = args.roster_dir or _config(args).device.roster_dir
    if not directory.is_dir():
        raise UsageError(f"roster directory {directory} does not exist")
    return Roster(directory)


def _roster_add(args) -> int:
    from appliance.roster import CardRejected, printable
    try:
        card = _roster(args).add(args.card.read_bytes(), replace=args.replace)
    except CardRejected as e:
        raise UsageError(f"{args.card}: refused: {e.reason}") from None
    except OSError as e:
        raise UsageError(f"{args.card}: {e.strerror}") from None
    print(f"enrolled {card.teacher_id} ({printable(card.name)}), fingerprint {card.fingerprint}")
    return 0


def _roster_list(args) -> int:
    from appliance.roster import printable
    for card in _roster(args).cards():
        print(f"{card.teacher_id}\t{printable(card.name)}\t{card.fingerprint}")
    return 0


def _roster_remove(args) -> int:
    if not _roster(args).remove(args.teacher_id):
        raise UsageError(f"{args.teacher_id} is not enrolled")
    print(f"removed {args.teacher_id}")
    return 0


def _token_mint(args) -> int:
    from teacher_tools.keys import KeyFileError, load_signing_key, read_passphrase
    from appliance.token import MAX_LIFETIME_S, mint
    if not 0 < args.lifetime <= MAX_LIFETIME_S:
        raise UsageError(f"--lifetime must be 1 to {MAX_LIFETIME_S} seconds")
    card = read_card(args.card)
    try:
        key = load_signing_key(args.key, read_passphrase(args.passphrase_file))
    except (KeyFileError, OSError) as e:
        raise UsageError(str(e)) from None
    print(mint(key, card.teacher_id, args.device, args.nonce, card.recipient, args.act,
               args.lifetime))
    return 0


def _doctor(args) -> int:
    """What the unit still needs (its configuration), then, unless `--setup`, the health checks
    with their fixes; 1 if anything is missing or any check failed."""
    from appliance.config import ConfigError, load
    from appliance.health.doctor import doctor
    from appliance.health.readiness import report
    missing = report(args.config)
    if args.setup:
        return missing
    try:
        config = load(args.config)
    except ConfigError:
        return 1  # said above, as the first thing missing
    return max(missing, doctor(config))


def _fleet(args) -> int:
    import os
    from appliance.health.fleet import FleetError, as_json, read_fleet
    password = os.environ.get("CLASSCAM_MQTT_PASSWORD")
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise UsageError(f"{args.password_file}: {e.strerror}") from None
    try:
        lines = read_fleet(args.broker, args.port, args.ca, args.username, password, args.cert,
                           args.key, wait_s=args.wait)
    except FleetError as e:
        raise UsageError(str(e)) from None
    print(as_json(lines) if args.json else "\n".join(line.text() for line in lines))
    return 0 if lines and all(line.ok for line in lines) else 1


def _notice_sheet(args) -> int:
    from appliance.notice_sheet import Language, NoticeSheetError, notice_sheets, write
    from appliance.roster import Roster, printable
    config = _config(args)
    names = []
    if config.privacy.name_teachers:
        names = [printable(card.name) for card in Roster(config.device.roster_dir).cards()]
    languages: list[Language]
    if args.lang == "both":
        order = list(config.notice.languages)
        languages = order + [lang for lang in ("en", "cy") if lang not in order]
    else:
        languages = [args.lang]
    try:
        paths = write(notice_sheets(config, names, languages), args.output, args.format)
    except (NoticeSheetError, OSError) as e:
        raise UsageError(str(e)) from None
    for path in paths:
        print(path)
    return 0


def _zones_preview(args) -> int:
    """Ask the running daemon, over the pad link's socket, for one zoned frame; write it."""
    import base64
    import json
    import socket
    from formats.durable import atomic_write
    config = _config(args)
    # The arm timeout for the teacher's token, then the notice and one frame, then the stop.
    wait_s = config.recording.arm_timeout_s + 180
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(wait_s)
            sock.connect(str(config.pad.socket))
            link = sock.makefile("rwb")
            link.write(b'{"type":"preview"}\n')
            link.flush()
            while line := link.readline():
                msg = json.loads(line)
                if msg.get("type") == "result" and not msg.get("ok"):
                    raise UsageError(f"the unit refused: {msg.get('reason')}")
                if msg.get("type") == "result":
                    print("armed: a teacher presents their token at the pad", file=sys.stderr)
                if msg.get("type") == "preview":
                    break
            else:
                raise UsageError("the unit closed the link before the preview")
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot get a preview from the daemon at {config.pad.socket}: "
                         f"{e}") from None
    if not msg["ok"]:
        raise UsageError(f"no preview: {msg['reason']}")
    try:
        atomic_write(args.out, base64.b64decode(msg["png"]), mode=0o600)
    except OSError as e:
        raise UsageError(f"cannot write {args.out}: {e}") from None
    print(args.out)
    return 0


def _led_off(args) -> int:
    """Reads only the LED's pin (a broken configuration must not keep the LED lit, P2)."""
    from led_indicator.off import leave_low, led_pin
    pin, why = led_pin(args.config)
    if why is not None:
        print(f"led-off: {why}; using the default pin {pin}", file=sys.stderr)
    try:
        leave_low(pin)
    except Exception as e:
        raise UsageError(f"led-off: cannot drive {pin} low: {e}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
