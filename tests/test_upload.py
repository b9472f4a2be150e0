"""Every sealed segment reaches the teacher's own account exactly once, whatever fails (P6, P7):
the real daemon, the reference account server over real mutual TLS on loopback, its fault
switches, and the teacher's own tools at the other end."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time


from teacher_tools.decrypt import check_segments
from formats.manifest import MANIFEST_FILE, open_manifest
from hwsim.invariants import check_all, device_intervals
from hwsim.lab import PASSPHRASE
from tests.media import decode_segments, identity

TEACHER = "t-evans"


def delivered(lab, server, teacher: str = TEACHER) -> dict[str, list[int]]:
    """Check the account holds every recording whole and each file once, and the unit nothing;
    returns each recording's frame counters read back from the decoded pixels."""
    assert lab.spooled() == [], "the unit still holds recordings"
    created = server.created()
    assert len(created) == len(set(created)), "a file was stored twice"
    ident = identity(lab, teacher)
    counters = {}
    for recording_id, files in server.stored(teacher).items():
        directory = lab.account_dir / teacher / recording_id
        manifest = open_manifest((directory / MANIFEST_FILE).read_bytes(), ident)
        assert sorted(files) == sorted([s.file for s in manifest.segments] + [MANIFEST_FILE])
        assert check_segments(directory, manifest.segments) == []
        decoded = decode_segments(directory, ident)
        assert decoded.counters == list(range(len(decoded.counters)))
        counters[recording_id] = decoded.counters
    return counters


def wait_for(condition, what: str, timeout: float = 30.0) -> None:
    """Until `condition()` is true; fails saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def frames(events) -> int:
    return sum(1 for e in events if e["ev"] == "frame")


def puts(server) -> list[dict]:
    return [r for r in server.requests_log if r["method"] == "PUT"]


def test_a_lesson_goes_to_the_teachers_account_during_recording_and_the_teacher_gets_it_whole(
        lab, tmp_path):
    with lab.account() as server, lab.daemon() as unit:
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher=TEACHER, pin="432187")
        unit.wait_state("recording")
        deadline = time.monotonic() + 10
        while not server.stored(TEACHER):  # the first segment arrives while recording
            assert time.monotonic() < deadline, "nothing uploaded during the lesson"
            time.sleep(0.05)
        assert unit.state() == "recording"
        time.sleep(2.0)  # the lesson goes on, uploading as it records: its length, not a wait
        unit.control("press")
        unit.wait_state("idle")
        unit.wait_uploaded()
        assert unit.control("status")["light"] == "idle"
        (recording_id, counters), = delivered(lab, server).items()
        assert len(counters) == frames(lab.timeline())
        # Oldest first: segments in order, the manifest last; each PUT once (no fault here).
        names = [r["path"].rsplit("/", 1)[1] for r in puts(server)]
        assert names == sorted(n for n in names if n != MANIFEST_FILE) + [MANIFEST_FILE]
        assert {r["cn"] for r in server.requests_log} == {"sim-unit-1"}
        assert {r["role"] for r in server.requests_log} == {"classcam-device"}

        # The teacher, on their own computer, with their own certificate.
        cred = lab.teacher_credential(TEACHER)
        account = ["--url", server.url, "--teacher-id", TEACHER, "--cert", str(cred.cert),
                   "--key", str(cred.key), "--ca", str(lab.pki().ca_cert)]
        listing = classcam("account", "ls", *account)
        assert listing.stdout.startswith(recording_id) and "manifest" in listing.stdout
        download = tmp_path / "lesson"
        assert classcam("account", "get", recording_id, "-o", str(download), *account).returncode == 0
        out = tmp_path / "lesson.mp4"
        run = classcam("decrypt", "--identity", str(lab.key_files(TEACHER).identity),
                       "--known-devices", str(tmp_path / "known.json"), "--trust-new-unit",
                       str(download), "-o", str(out))
        assert run.returncode == 0, run.stderr
        assert f"{len(counters)} frames" in run.stdout and out.stat().st_size > 0
        assert classcam("account", "rm", recording_id, *account).returncode == 0
        assert server.stored(TEACHER) == {}
    # P9: the journal says nothing about who recorded, or that anything was uploaded.
    journal = lab.journal()
    assert TEACHER not in journal and recording_id not in journal and "upload" not in journal


def classcam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, CLASSCAM_PASSPHRASE=PASSPHRASE))


def test_a_server_down_for_the_whole_lesson_loses_nothing_and_everything_goes_when_it_is_back(lab):
    with lab.account() as server, lab.daemon() as unit:
        server.faults.set("refuse")
        assert unit.lesson(TEACHER, seconds=2.5)["ok"]
        wait_for(lambda: unit.control("status")["light"] == "upload_retrying"
                 and "fault: upload: cannot reach the server" in lab.journal(),
                 "the unit to show that uploads are failing")
        assert len(lab.spooled()) == 1 and server.stored(TEACHER) == {}
        server.faults.clear("refuse")
        unit.wait_uploaded(30)
        counters = delivered(lab, server)
        assert unit.control("status")["light"] == "idle"
    assert sum(map(len, counters.values())) == frames(lab.timeline())
    assert "upload: working again" in lab.journal()


def test_500s_and_429s_are_retried_honouring_retry_after(lab):
    with lab.account() as server, lab.daemon() as unit:
        server.faults.set("error_500", count=3)
        server.faults.set("too_many", count=2, seconds=1.5)
        assert unit.lesson(TEACHER, seconds=2.0)["ok"]
        unit.wait_uploaded(60)
        delivered(lab, server)
        log = server.requests_log
    statuses = [r["status"] for r in log]
    assert statuses.count(500) == 3 and statuses.count(429) == 2
    for before, after in zip(log, log[1:]):
        if before["status"] == 429:  # Retry-After: 1.5 honoured (the answer is sent at once)
            assert after["t"] - before["t"] >= 1.4, (before, after)
    assert "fault: upload: server answered 500" in lab.journal()


def test_a_connection_reset_mid_body_resumes_where_the_server_got_to(lab):
    # Segments of ~60 kB in ranges of 16 kB: the reset hits a resumable upload.
    with lab.account(chunk_mb=1 / 64) as server, lab.daemon() as unit:
        server.faults.set("reset_mid_body", count=3)
        assert unit.lesson(TEACHER, seconds=2.0)["ok"]
        unit.wait_uploaded(60)
        delivered(lab, server)
        log = server.requests_log
    assert sum(1 for r in log if r.get("fault") == "reset_mid_body") == 3
    assert any(r["method"] == "HEAD" for r in log)  # asked where to resume
    assert any(r["status"] == 202 for r in log)     # ranges accepted one by one


def test_a_stalled_server_times_out_and_the_upload_is_retried(lab):
    with lab.account(read_timeout_s=1.0) as server, lab.daemon() as unit:
        server.faults.set("stall", count=1, seconds=4)
        assert unit.lesson(TEACHER, seconds=1.5)["ok"]
        unit.wait_uploaded(60)
        delivered(lab, server)
    assert "fault: upload: the server did not answer in time" in lab.journal()


def test_an_answer_lost_after_the_server_stored_the_file_is_not_stored_twice(lab):
    with lab.account() as server, lab.daemon() as unit:
        server.faults.set("drop_answer", count=2)
        assert unit.lesson(TEACHER, seconds=1.5)["ok"]
        unit.wait_uploaded(60)
        delivered(lab, server)
        assert [r["status"] for r in puts(server)].count(200) >= 1  # the retry was told "same"


def test_a_file_the_server_refuses_is_kept_and_not_hammered(lab):
    with lab.account(hold_s=600) as server, lab.daemon() as unit:
        server.faults.set("refuse")
        assert unit.lesson(TEACHER, seconds=2.2)["ok"]
        (recording,) = lab.spooled()
        rotten = sorted(recording.glob("seg-*.ts.age"))[1]  # the SD card flips a bit
        data = bytearray(rotten.read_bytes())
        data[-1] ^= 1
        rotten.write_bytes(bytes(data))
        server.faults.clear("refuse")
        deadline = time.monotonic() + 30
        while len(server.stored(TEACHER).get(recording.name, {})) < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(1.0)  # a second of nothing happening: the refused file must not be resent
        assert rotten.exists()  # never deleted: the server did not confirm it
        attempts = [r for r in puts(server) if r["path"].endswith(rotten.name)]
        assert [r["status"] for r in attempts] == [422]  # a 4xx is not retried (until hold_s)
        assert unit.control("status")["light"] == "upload_retrying"
    assert "fault: upload: server refused a file: server answered 422" in lab.journal()


def test_a_server_certificate_from_another_ca_is_refused_and_nothing_is_sent(lab, tmp_path):
    from hwsim.pki import TestPki
    stranger = TestPki.create(tmp_path / "other-ca")
    with lab.account(ca_bundle=str(stranger.ca_cert)) as server, lab.daemon() as unit:
        assert unit.lesson(TEACHER, seconds=1.2)["ok"]
        wait_for(lambda: "fault: upload: TLS: " in lab.journal(),
                 "the unit to refuse the server's certificate")
        assert server.stored(TEACHER) == {} and server.requests_log == []
        assert len(lab.spooled()) == 1
    assert "fault: upload: TLS: " in lab.journal() and "CERTIFICATE_VERIFY_FAILED" in lab.journal()


def test_plain_http_to_another_host_stops_the_daemon_with_one_line(lab):
    lab.settings["upload"] = {"url": "http://192.0.2.10/"}
    lab.write_config()
    run = subprocess.run([sys.executable, "-m", "appliance.cli", "run", "--hw", "sim", "--config",
                          str(lab.config_path)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 78
    assert run.stderr.strip().splitlines() == [
        f"ERROR classcam: config: {lab.config_path}: upload.url: plain HTTP is allowed only to a "
        "loopback address, and only in simulation"]


def test_a_full_spool_stops_recording_refuses_a_new_one_aloud_and_loses_nothing(lab):
    lab.settings["capture"] = {"min_free_mb": 0.05}
    lab.settings["spool"] = {"quota_mb": 0.4}
    with lab.account() as server, lab.daemon() as unit:
        server.faults.set("refuse")  # nothing leaves the unit, so the spool fills
        unit.control("press")
        unit.wait_state("armed")
        assert unit.control("pin", teacher=TEACHER, pin="432187")["result"]["ok"]
        unit.wait_state("recording")
        unit.wait_state("idle", timeout=60)  # stopped by itself before the quota was exceeded
        status = unit.control("status")
        assert status["fault"] == "capture" and status["light"] == "fault"
        used = sum(p.stat().st_size for p in lab.spooled()[0].iterdir())
        assert used <= 0.4 * 1024 * 1024
        opened = len(device_intervals(lab.timeline()))
        # A new recording is refused, out loud, and nothing opens.
        unit.control("press")
        unit.wait_state("armed")
        result = unit.control("pin", teacher=TEACHER, pin="432187")["result"]
        assert result == {"type": "result", "ok": False, "reason": "storage full"}
        events = lab.timeline()
        assert len(device_intervals(events)) == opened
        full = [e for e in events if e["ev"] == "notice" and e["label"] == "full"]
        assert [e["phase"] for e in full] == ["start", "end"] and full[1]["completed"]
        assert unit.control("status")["fault"] == "storage"
        # When the server is back, everything recorded reaches the account.
        server.faults.clear("refuse")
        unit.wait_uploaded(60)
        (counters,) = delivered(lab, server).values()
    events = lab.timeline()
    assert len(counters) >= frames(events) - 25  # at most the unsealed last second is not kept
    assert check_all(events) == []
    assert "fault: storage: only" in lab.journal()


def test_discard_is_of_the_last_recording_made_and_says_what_already_reached_the_account(lab):
    with lab.account(hold_s=600) as server, lab.daemon() as unit:
        # An older recording stays on the unit: one of its segments is refused (bit rot).
        server.faults.set("refuse")
        assert unit.lesson(TEACHER, seconds=1.2)["ok"]
        (older,) = lab.spooled()
        rotten = sorted(older.glob("seg-*.ts.age"))[0]
        rotten.write_bytes(rotten.read_bytes()[:-1] + b"\0")
        server.faults.clear("refuse")
        # The newest recording reaches the account whole.
        assert unit.lesson(TEACHER, seconds=1.2)["ok"]
        deadline = time.monotonic() + 30
        while lab.spooled() != [older] or len(server.stored(TEACHER)) < 2:
            assert time.monotonic() < deadline, lab.spooled()
            time.sleep(0.05)
        unit.control("press")
        unit.wait_state("armed")
        result = unit.control("pin", teacher=TEACHER, pin="432187", act="discard")["result"]
        # "The last recording" is the newest made, not the newest still here.
        assert result == {"type": "result", "ok": False,
                          "reason": "already uploaded: delete it from your account"}
        assert lab.spooled() == [older]
        # A recording of which some segments are in the account already, the manifest not.
        unit.control("press")
        unit.wait_state("armed")
        unit.control("pin", teacher=TEACHER, pin="432187")
        unit.wait_state("recording")
        while len(server.stored(TEACHER)) < 3:
            assert time.monotonic() < deadline + 30
            time.sleep(0.05)
        server.faults.set("refuse")
        (newest,) = [r for r in lab.spooled() if r != older]
        wait_for(lambda: {p.name for p in newest.glob("seg-*.ts.age")}
                 - set(server.stored(TEACHER).get(newest.name, {})),
                 "a segment sealed while the server refuses")
        unit.control("press")
        unit.wait_state("idle")
        unit.control("press")
        unit.wait_state("armed")
        result = unit.control("pin", teacher=TEACHER, pin="432187", act="discard")["result"]
        assert result["ok"] and re.fullmatch(
            r"discarded; [1-9]\d* file\(s\) already uploaded stay in your account until you "
            r"delete them there", result["reason"]), result
        assert lab.spooled() == [older]
    # The device cannot delete from the account (P6): what reached it stays for the teacher.
    assert len(server.stored(TEACHER)) == 3


def test_sigterm_while_a_send_hangs_exits_promptly_and_the_file_goes_after_the_restart(lab):
    with lab.account(read_timeout_s=30) as server:
        with lab.daemon() as unit:
            server.faults.set("stall", seconds=20)  # every request hangs, well inside the timeout
            assert unit.lesson(TEACHER, seconds=1.2)["ok"]
            wait_for(lambda: server._open_connections(), "a send to hang")  # sim's own count
            asked = time.monotonic()
            assert unit.terminate() == 0
            assert time.monotonic() - asked < 6  # not held up by the hung request
        assert "Traceback" not in lab.journal()
        server.faults.clear()
        with lab.daemon() as unit:
            unit.wait_uploaded(60)
        delivered(lab, server)
