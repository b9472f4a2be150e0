"""The Debian package as IT meets it (issue 10). Built from this tree for amd64 and arm64,
signed into an apt repository, and, in a Debian 12 root made for this run: `apt install
classcam` by name; IT configures the unit; `apt upgrade` to a rebuilt, newer version while
recordings wait in the spool, which the new version then uploads; `apt remove`; `apt purge`;
and a first install on a unit configured beforehand. The arm64 package is checked file by
file, resolved against Debian 12 arm64, and, when this machine runs arm64 programs (qemu and
binfmt_misc), installed in an arm64 root.

Marked `debian`: `./dev test-deb` runs them (as root: mmdebstrap, chroot). The roots are made
once per run, in the background while the packages build. Every network step has a timeout;
without Debian's archive or PyPI the tests fail at once and say which.
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hwsim.account_server import AccountServer
from hwsim.lab import DEVICE_ID, Lab
from hwsim.pki import DEVICE, TestPki

pytestmark = [pytest.mark.debian, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parent.parent
# A local mirror or proxy of Debian's archive may stand in for it.
MIRROR = os.environ.get("CLASSCAM_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PYPI = "https://pypi.org/simple/pip/"
TEACHER = "t-evans"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
WANTS = "etc/systemd/system/multi-user.target.wants/classcam.service"
UNIT = "lib/systemd/system/classcam.service"
PAD_UNIT = "lib/systemd/system/classcam-pinpad.service"
SITE = "usr/lib/classcam/lib/python3.11/site-packages"
# What a unit whose daemon runs with mock pins needs: gpiozero's mock pins, with PWM for the
# status light (on a Pi, lgpio drives the real ones).
MOCK_PINS = {"GPIOZERO_PIN_FACTORY": "mock", "GPIOZERO_MOCK_PIN_CLASS": "mockpwmpin"}
CONFOLD = ["-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold"]
# The daemon's own modules, and the vendored ones it loads, that must import in the root.
DAEMON_MODULES = ["appliance.daemon", "appliance.cli", "appliance.speaker", "capture.pi",
                  "uploader.worker", "led_indicator.lights", "systemd.journal", "numpy", "certifi"]
# Time limits (seconds). Generous: the machine may be busy, and arm64 runs under emulation.
ROOT_TIMEOUT = {"amd64": 900, "arm64": 2400}
BUILD_TIMEOUT = 1800
APT_TIMEOUT = {"amd64": 900, "arm64": 2400}


# -- the run's shared state: packages, repository, roots -------------------------------------


@pytest.fixture(scope="module")
def workdir():
    if os.geteuid() != 0:
        pytest.fail("the Debian package tests run as root (mmdebstrap, chroot): ./dev test-deb")
    missing = [t for t in ("mmdebstrap", "reprepro", "lintian", "dpkg-buildpackage", "gpg",
                           "unshare", "readelf", "file") if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: ./dev test-deb installs them")
    needed = [f"{MIRROR}/dists/{SUITE}/InRelease"]
    if not all(_wheels_cached(arch) for arch in ("amd64", "arm64")):
        needed.append(PYPI)
    for url in needed:
        problem = _unreachable(url)
        if problem:
            pytest.fail(f"{url} is unreachable ({problem}): these tests need Debian's archive, "
                        "and PyPI until the wheels are in .cache/packaging")
    path = Path(tempfile.mkdtemp(prefix="classcam-deb-test-"))
    yield path
    for root in path.glob("root-*"):
        _remove_root(root)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def root_jobs(workdir):
    """Both Debian 12 roots, made in the background from the start of the run; a root not
    finished when the module ends (its tests deselected) is abandoned, not waited for."""
    maker = _RootMaker()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    jobs = {"amd64": pool.submit(maker.make, workdir / "root-amd64", "amd64")}
    if _runs_arm64():
        jobs["arm64"] = pool.submit(maker.make, workdir / "root-arm64", "arm64")
    yield jobs
    maker.cancel()
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def deb_amd64(workdir, root_jobs) -> Path:
    return _build("amd64", workdir / "debs", fast=True)


@pytest.fixture(scope="module")
def deb_upgrade(workdir, deb_amd64) -> Path:
    """The same tree rebuilt as a newer version whose conffile changed upstream."""
    tree = workdir / "tree-upgrade"
    _copy_tree(REPO, tree)
    config = tree / "config" / "classcam.toml"
    config.write_text(config.read_text() + "\n# Added upstream in the upgrade test's rebuild.\n")
    return _build("amd64", workdir / "debs", version=f"{_version()}+upgrade1", tree=tree,
                  fast=True)


@pytest.fixture(scope="module")
def deb_arm64(workdir, deb_amd64) -> Path:
    return _build("arm64", workdir / "debs", fast=True)


@pytest.fixture(scope="module")
def repo(workdir, deb_amd64, deb_arm64) -> AptRepo:
    """The school's signed repository, holding the first version for both architectures."""
    gnupg = workdir / "gnupg"
    _check([REPO / "packaging" / "repo-key", "--gnupghome", gnupg, "--no-passphrase",
            "--uid", "classcam test repository <it@example.invalid>"], timeout=120)
    impostor = workdir / "impostor-gnupg"
    _check([REPO / "packaging" / "repo-key", "--gnupghome", impostor, "--no-passphrase",
            "--uid", "someone else <them@example.invalid>"], timeout=120)
    repo = AptRepo(workdir / "repo", gnupg, impostor / "classcam-archive-keyring.gpg")
    repo.publish(deb_amd64, deb_arm64)
    return repo


@dataclass(frozen=True)
class Recorded:
    """What a simulated classroom made: two sealed recordings, and the teacher's card."""

    first: Path
    second: Path
    card: Path


@pytest.fixture(scope="module")
def recordings(workdir) -> Recorded:
    """Two recordings of a simulated lesson, sealed by the real capture chain on this machine:
    what a unit's spool holds while its uploads wait."""
    lab = Lab.create(workdir / "lab", teachers={TEACHER: "432187"})
    with lab.daemon() as unit:
        for _ in range(2):
            assert unit.lesson(TEACHER, seconds=1.5)["ok"]
    made = lab.spooled()
    assert len(made) == 2 and all(len(list(r.glob("seg-*.ts.age"))) >= 1 and
                                  (r / "manifest.age").exists() for r in made), made
    return Recorded(made[0], made[1], lab.key_files(TEACHER).card)


@pytest.fixture(scope="module")
def account(workdir):
    """The reference account server on loopback (the roots share this machine's network)."""
    pki = TestPki.create(workdir / "pki")
    server = AccountServer(workdir / "account", pki)
    server.start()
    yield server, pki, pki.issue(DEVICE_ID, DEVICE)
    server.stop()


@pytest.fixture(scope="module")
def unit(workdir, root_jobs, repo, deb_upgrade, recordings, account) -> Unit:
    root = root_jobs["amd64"].result(timeout=ROOT_TIMEOUT["amd64"])
    return Unit(root, repo, deb_upgrade, recordings, *account)


# -- amd64: the package and its life on a unit -----------------------------------------------


def test_amd64_package_has_no_lintian_error_and_each_warning_is_explained(deb_amd64):
    _assert_lintian_clean(deb_amd64)


def test_apt_refuses_the_repository_signed_with_another_key(unit):
    unit.reach("repo_added")
    refused = unit.log["wrong_key_update"]
    assert refused.returncode != 0, refused.stdout
    assert "NO_PUBKEY" in refused.stdout and "is not signed" in refused.stdout, refused.stdout


def test_apt_installs_classcam_by_name_and_an_unconfigured_unit_stays_disabled(unit):
    unit.reach("installed")
    out = unit.log["install"].stdout
    assert f"Setting up classcam ({_version()})" in out, out
    assert unit.root.dpkg_status("classcam") == ("install ok installed", _version())
    policy = unit.root.run("apt-cache", "policy", "classcam").stdout
    assert "file:/srv/classcam-repo bookworm/main amd64 Packages" in policy, policy
    # Not configured: the unit stays disabled and the doctor's lines say what is missing.
    assert "classcam: classcam.service stays disabled until the unit is configured:" in out
    assert 'missing: device.id is still the example "classcam-unit"' in out
    assert "missing: upload.url is not set" in out
    assert not unit.root.file(WANTS).is_symlink()


def test_installed_files_are_the_trees_own_and_the_simulator_is_not_among_them(unit):
    unit.reach("installed")
    root = unit.root
    for tree_file, installed in (("systemd/classcam.service", UNIT),
                                 ("systemd/classcam-pinpad.service", PAD_UNIT),
                                 ("systemd/70-classcam-pinpad.rules",
                                  "usr/lib/udev/rules.d/70-classcam-pinpad.rules"),
                                 ("config/pinpad.toml", "etc/classcam/pinpad.toml"),
                                 ("systemd/classcam.sysusers", "usr/lib/sysusers.d/classcam.conf"),
                                 ("systemd/classcam.tmpfiles", "usr/lib/tmpfiles.d/classcam.conf"),
                                 ("config/classcam.toml", "etc/classcam/classcam.toml"),
                                 ("README.md", "usr/share/doc/classcam/README.md")):
        assert root.file(installed).read_bytes() == (REPO / tree_file).read_bytes(), installed
    conffiles = root.run("dpkg-query", "-W", "-f=${Conffiles}", "classcam").stdout.split()
    assert conffiles[0::2] == ["/etc/classcam/classcam.toml", "/etc/classcam/pinpad.toml"]
    assert os.access(root.file("usr/bin/classcam"), os.X_OK)
    assert os.access(root.file("usr/bin/classcam-pinpad"), os.X_OK)
    files = root.run("dpkg", "-L", "classcam").stdout.splitlines()
    assert f"/{SITE}/appliance/daemon.py" in files
    # The simulator, the reference account server and the benchmarks stay out (DESIGN.md 3).
    strays = [f for f in files if re.search(r"/(hwsim|bench|tests)(/|$)|account_server", f)]
    assert strays == []
    assert not root.file(SITE, "hwsim").exists()


def test_the_system_user_its_groups_and_directories(unit):
    unit.reach("installed")
    root = unit.root
    user = root.passwd("classcam")
    assert user[5:] == ["/var/lib/classcam", "/usr/sbin/nologin"], user
    for group in ("video", "audio", "gpio", "classcam-pinpad"):
        assert "classcam" in root.group(group)[3].split(","), group
    # The PIN pad service's own account: not the daemon's, and not in the daemon's groups.
    pad = root.passwd("classcam-pinpad")
    assert pad[5:] == ["/var/lib/classcam-pinpad", "/usr/sbin/nologin"], pad
    for group in ("input", "audio"):
        assert "classcam-pinpad" in root.group(group)[3].split(","), group
    assert "classcam-pinpad" not in root.group("classcam")[3].split(",")
    for path, mode, owner in (("var/lib/classcam-pinpad", 0o700, "classcam-pinpad"),
                              ("var/lib/classcam", 0o700, "classcam"),
                              ("var/lib/classcam/spool", 0o700, "classcam"),
                              ("etc/classcam", 0o755, "root"),
                              ("etc/classcam/teachers.d", 0o755, "root")):
        st = root.file(path).stat()
        assert (st.st_mode & 0o7777, root.user_name(st.st_uid)) == (mode, owner), path


def test_the_units_verify_without_a_warning_and_their_exposure_is_low(unit):
    unit.reach("installed")
    root = unit.root
    for installed in (UNIT, PAD_UNIT):
        verify = root.run("systemd-analyze", "verify", f"/{installed}", check=False)
        assert (verify.returncode, verify.stdout) == (0, ""), verify.stdout
        security = root.run("systemd-analyze", "security", "--offline=yes", f"/{installed}").stdout
        name = re.escape(Path(installed).name)
        level = re.search(rf"Overall exposure level for {name}: ([0-9.]+)", security)
        assert level and float(level.group(1)) <= 2.0, security
    # The same check sees a mistake: a copy of the unit with one wrong value warns.
    broken = root.file("tmp/classcam.service")
    broken.write_text(root.file(UNIT).read_text().replace("ProtectSystem=strict",
                                                          "ProtectSystem=strictest"))
    warned = root.run("systemd-analyze", "verify", "/tmp/classcam.service", check=False)
    broken.unlink()
    assert warned.returncode == 0 and "/tmp/classcam.service:" in warned.stdout, warned.stdout


def test_the_installed_classcam_runs(unit):
    unit.reach("installed")
    root = unit.root
    assert root.run("classcam", "--version").stdout.strip() == "classcam 0.1.0"
    # The pad's commands, as IT runs them (as root) before any teacher is enrolled.
    assert root.run("classcam-pinpad", "list").returncode == 0
    assert root.run("classcam", "check-config").stdout.strip() == \
        "/etc/classcam/classcam.toml: ok (device classcam-unit)"
    doctor = root.run("classcam", "doctor", "--setup", check=False)
    assert doctor.returncode == 1 and doctor.stdout.splitlines()[-1] == "2 thing(s) missing"
    # Without --setup it goes on to the health checks, which find no daemon running here.
    full = root.run("classcam", "doctor", check=False).stdout.splitlines()
    assert full[:len(doctor.stdout.splitlines())] == doctor.stdout.splitlines()
    assert any(line.startswith("daemon: fault: not running") for line in full), full
    shutil.copy(unit.card, root.file("root/card.json"))
    added = root.run("classcam", "roster", "add", "/root/card.json").stdout
    assert added.startswith(f"enrolled {TEACHER} ")
    assert root.run("classcam", "roster", "list").stdout.split("\t")[0] == TEACHER
    assert len(list(root.file("etc/classcam/teachers.d").iterdir())) == 1


def test_every_vendored_requirement_is_met_and_every_module_imports(unit):
    unit.reach("installed")
    _assert_requirements_and_imports(unit.root)


def test_upgrade_keeps_config_roster_key_and_waiting_recordings(unit):
    unit.reach("upgraded")
    root, kept = unit.root, unit.kept
    assert root.dpkg_status("classcam") == ("install ok installed", f"{_version()}+upgrade1")
    # IT's edits stay (the conffile changed upstream too: the new one is beside it).
    assert root.file("etc/classcam/classcam.toml").read_text() == kept["config"]
    dist = root.file("etc/classcam/classcam.toml.dpkg-dist").read_text()
    assert dist.endswith("# Added upstream in the upgrade test's rebuild.\n")
    assert _digests(root.file("etc/classcam/teachers.d")) == kept["roster"]
    assert _sha256(root.file("var/lib/classcam/device.key")) == kept["device_key"]
    assert _digests(unit.spool / unit.first.name) == kept["spool"]
    assert root.file(WANTS).is_symlink(), "IT enabled the unit: an upgrade keeps it enabled"


def test_the_upgraded_daemon_uploads_what_waited_in_the_spool(unit):
    unit.reach("uploaded")
    stored = unit.server.stored(TEACHER)[unit.first.name]
    assert {name: sha for name, (_, sha) in stored.items()} == unit.kept["spool_sha"]
    assert not (unit.spool / unit.first.name).exists()
    assert unit.log["daemon_exit"] == 0, unit.log["daemon_journal"]


def test_remove_keeps_config_key_roster_and_unsent_recordings(unit):
    unit.reach("removed")
    root, kept = unit.root, unit.kept
    out = unit.log["remove"].stdout
    assert root.dpkg_status("classcam")[0] == "deinstall ok config-files"
    assert not root.file("usr/bin/classcam").exists()
    assert not root.file("usr/lib/classcam").exists(), "compiled bytecode left behind"
    assert root.file("etc/classcam/classcam.toml").read_text() == kept["config"]
    assert _digests(root.file("etc/classcam/teachers.d")) == kept["roster"]
    assert _sha256(root.file("var/lib/classcam/device.key")) == kept["device_key"]
    assert _digests(unit.spool / unit.second.name) == kept["second"]
    waiting = sum(name.endswith(".age") for name in kept["second"])
    assert f"classcam: {waiting} recording file(s) not yet uploaded stay in " \
           "/var/lib/classcam/spool:" in out, out
    assert root.passwd("classcam")


def test_purge_shreds_and_removes_everything_of_ours_and_says_so(unit):
    unit.reach("purged")
    root, out = unit.root, unit.log["purge"].stdout
    waiting = sum(name.endswith(".age") for name in unit.kept["second"])
    assert f"classcam: purged /var/lib/classcam (the device key; {waiting} recording file(s) " \
           "never uploaded) and /etc/classcam (1 teacher card(s)), overwritten then deleted" in out
    assert "classcam: removed the system user classcam" in out
    assert "classcam: removed the system user classcam-pinpad" in out
    assert "classcam: purged /var/lib/classcam-pinpad (the PIN pad's keystore; 0 teacher(s)), " \
           "overwritten then deleted" in out
    assert root.run("dpkg-query", "-W", "classcam", check=False).returncode != 0
    # Overwritten before unlinked: a second link to each file shows what is left in it.
    for witness in unit.witnesses:
        data = witness.read_bytes()
        assert data and data == bytes(len(data)), f"{witness.name} was not overwritten"
    for path in ("etc/classcam", "var/lib/classcam", "var/lib/classcam-pinpad", WANTS,
                 "var/lib/systemd/deb-systemd-helper-enabled/classcam.service.dsh-also"):
        assert not root.file(path).exists() and not root.file(path).is_symlink(), path
    assert not root.passwd("classcam") and not root.passwd("classcam-pinpad")
    assert not root.group("classcam-pinpad")
    assert "classcam" not in root.group("gpio")[3].split(",")
    for name in ("passwd", "group", "shadow", "gshadow"):
        assert not re.search(r"^classcam", root.file("etc", name).read_text(), re.M), name
    # What stays is IT's and apt's: the repository IT added, its index and apt's download cache.
    left = [p for p in root.find_named("classcam")
            if not re.fullmatch(r"/(etc/apt/(sources\.list\.d/classcam\.sources|keyrings/"
                                r"classcam\.gpg)|var/lib/apt/lists/.*|var/cache/apt/archives/"
                                r"classcam_.*\.deb|srv/classcam-repo(/.*)?)", p)]
    assert left == []


def test_a_first_install_on_a_configured_unit_enables_the_daemon(unit):
    unit.reach("preconfigured")
    out = unit.log["preconfigured_install"].stdout
    assert "classcam: the unit is configured: classcam.service is enabled" in out, out
    assert unit.root.file(WANTS).is_symlink()
    assert unit.root.run("classcam", "doctor", "--setup").stdout.splitlines()[-1] == \
        "ready: nothing missing"


# -- arm64: the Raspberry Pi's package --------------------------------------------------------


def test_arm64_package_has_no_lintian_error_and_each_warning_is_explained(deb_arm64):
    _assert_lintian_clean(deb_arm64)


def test_arm64_every_compiled_file_is_aarch64(deb_arm64, workdir):
    tree = workdir / "arm64-contents"
    _check(["dpkg-deb", "-x", deb_arm64, tree], timeout=300)
    elves = []
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.read_bytes()[:4] == b"\x7fELF":
            elves.append(path)
    assert len(elves) > 50, "fewer compiled files than PyAV, cryptography and pydantic carry"
    wrong = {}
    for path in elves:
        described = _check(["file", "-b", path], timeout=60).stdout
        machine = re.search(r"Machine:\s*(.*)", _check(["readelf", "-h", path], timeout=60).stdout)
        if "ARM aarch64" not in described or not machine or machine.group(1).strip() != "AArch64":
            wrong[str(path.relative_to(tree))] = described.strip()
    assert wrong == {}


def test_arm64_dependencies_resolve_on_debian_12_arm64(repo, workdir):
    apt = _ForeignApt(workdir / "apt-arm64", "arm64", repo)
    plan = apt.simulate_install("classcam")
    assert re.search(rf"^Inst classcam \({re.escape(_version())} .*\[arm64\]\)", plan, re.M), plan
    for dependency in ("python3-numpy", "python3-certifi", "python3-systemd", "python3-evdev", "espeak-ng",
                       "libportaudio2", "systemd", "python3.11"):
        assert re.search(rf"^Inst {re.escape(dependency)} .*\[(arm64|all)\]", plan, re.M), \
            dependency
    # The camera stack is Raspberry Pi OS's (Recommends): Debian 12 has none of it.
    assert "Inst python3-picamera2" not in plan and "Inst python3-lgpio" not in plan


def test_arm64_installs_and_runs_in_an_arm64_root(root_jobs, repo):
    if "arm64" not in root_jobs:
        pytest.skip("this machine cannot run arm64 programs (no qemu-aarch64 in binfmt_misc); "
                    "the two tests above check the arm64 package without running it")
    root = root_jobs["arm64"].result(timeout=ROOT_TIMEOUT["arm64"])
    repo.add_to(root)
    assert root.apt("update").returncode == 0
    installed = root.apt("install", "classcam", timeout=APT_TIMEOUT["arm64"])
    assert installed.returncode == 0, installed.stdout
    assert root.run("uname", "-m").stdout.strip() == "aarch64"
    assert root.dpkg_status("classcam") == ("install ok installed", _version())
    assert root.run("classcam", "--version").stdout.strip() == "classcam 0.1.0"
    # The pad's commands, as IT runs them (as root) before any teacher is enrolled.
    assert root.run("classcam-pinpad", "list").returncode == 0
    assert root.run("classcam", "check-config").stdout.startswith("/etc/classcam/classcam.toml: ok")
    _assert_requirements_and_imports(root)


# -- a unit's life, step by step ---------------------------------------------------------------


@dataclass
class Unit:
    """The amd64 root as one unit through IT's workflow. Each step runs once, in order, when a
    test first needs it; a step that failed fails every later one."""

    root: Root
    repo: AptRepo
    deb_upgrade: Path
    recorded: Recorded
    server: AccountServer
    pki: TestPki
    device: object
    log: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)
    witnesses: list[Path] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    failed: str | None = None

    STEPS = ("repo_added", "installed", "configured", "upgraded", "uploaded", "removed",
             "purged", "preconfigured")

    @property
    def first(self) -> Path:
        return self.recorded.first

    @property
    def second(self) -> Path:
        return self.recorded.second

    @property
    def card(self) -> Path:
        return self.recorded.card

    @property
    def spool(self) -> Path:
        return self.root.file("var/lib/classcam/spool")

    def reach(self, step: str) -> None:
        for name in self.STEPS[:self.STEPS.index(step) + 1]:
            if name in self.done:
                continue
            if self.failed:
                pytest.fail(f"an earlier step failed: {self.failed}")
            try:
                getattr(self, f"_{name}")()
            except BaseException:
                self.failed = name
                raise
            self.done.append(name)

    def _repo_added(self) -> None:
        # First with the wrong key: apt must refuse the repository.
        self.repo.add_to(self.root, keyring=self.repo.impostor_keyring)
        self.log["wrong_key_update"] = self.root.apt("update")
        self.repo.add_to(self.root)
        updated = self.root.apt("update")
        assert updated.returncode == 0 and "W:" not in updated.stdout, updated.stdout

    def _installed(self) -> None:
        self.log["install"] = self.root.apt("install", "classcam")
        assert self.log["install"].returncode == 0, self.log["install"].stdout

    def _configured(self) -> None:
        """IT's workflow (README): the device id and the upload settings, the credentials,
        the roster; the doctor; `systemctl enable`; the daemon's first start makes its key.
        Then a recording seals while the school's server cannot be reached."""
        root = self.root
        config = root.file("etc/classcam/classcam.toml")
        config.write_text(_configure(config.read_text(), self.server.url))
        staging = root.file("root/staging")
        staging.mkdir()
        shutil.copy(self.pki.ca_cert, staging / "account-ca.pem")
        shutil.copy(self.device.cert, staging / "device.crt")
        shutil.copy(self.device.key, staging / "device.key")
        root.run("install", "-m", "0644", "/root/staging/account-ca.pem",
                 "/root/staging/device.crt", "/etc/classcam/")
        root.run("install", "-o", "root", "-g", "classcam", "-m", "0640",
                 "/root/staging/device.key", "/etc/classcam/")
        if not list(root.file("etc/classcam/teachers.d").iterdir()):
            shutil.copy(self.card, root.file("root/card.json"))
            root.run("classcam", "roster", "add", "/root/card.json")
        doctor = root.run("classcam", "doctor", "--setup", check=False)
        assert doctor.returncode == 0, doctor.stdout
        root.run("systemctl", "enable", "classcam")
        with self.daemon():
            pass
        assert root.file("var/lib/classcam/device.key").exists()
        shutil.copytree(self.first, self.spool / self.first.name)
        root.run("chown", "-R", "classcam:classcam", "/var/lib/classcam/spool")
        self.kept.update(config=config.read_text(),
                         roster=_digests(root.file("etc/classcam/teachers.d")),
                         device_key=_sha256(root.file("var/lib/classcam/device.key")),
                         spool=_digests(self.spool / self.first.name),
                         spool_sha={name: sha for name, sha in
                                    _digests(self.spool / self.first.name).items()
                                    if name.endswith(".age")})

    def _upgraded(self) -> None:
        self.repo.publish(self.deb_upgrade)
        self.repo.add_to(self.root)
        assert self.root.apt("update").returncode == 0
        # Unattended, as IT's upgrades run: a conffile changed on both sides keeps IT's.
        self.log["upgrade"] = self.root.apt(*CONFOLD, "upgrade")
        assert self.log["upgrade"].returncode == 0, self.log["upgrade"].stdout

    def _uploaded(self) -> None:
        deadline = time.monotonic() + 120
        with self.daemon() as journal:
            while (self.spool / self.first.name).exists():
                if time.monotonic() > deadline:
                    pytest.fail(f"still in the spool after 120 s:\n{journal.read_text()}")
                time.sleep(0.2)

    def _removed(self) -> None:
        shutil.copytree(self.second, self.spool / self.second.name)
        self.root.run("chown", "-R", "classcam:classcam", "/var/lib/classcam/spool")
        self.kept["second"] = _digests(self.spool / self.second.name)
        self.log["remove"] = self.root.apt("remove", "classcam")
        assert self.log["remove"].returncode == 0, self.log["remove"].stdout

    def _purged(self) -> None:
        for i, path in enumerate((next((self.spool / self.second.name).glob("seg-*.ts.age")),
                                  self.root.file("var/lib/classcam/device.key"),
                                  self.root.file("etc/classcam/device.key"))):
            witness = self.root.file("root", f"witness-{i}-{path.name}")
            os.link(path, witness)
            self.witnesses.append(witness)
        self.log["purge"] = self.root.apt("purge", "classcam")
        assert self.log["purge"].returncode == 0, self.log["purge"].stdout

    def _preconfigured(self) -> None:
        """A unit provisioned before the package: its configuration and credentials are in
        place when apt installs classcam (the classcam group does not exist yet, so the key
        is readable by all; the doctor notes it)."""
        etc = self.root.file("etc/classcam")
        etc.mkdir()
        config = _configure((REPO / "config" / "classcam.toml").read_text(), self.server.url)
        (etc / "classcam.toml").write_text(config)
        for src, name in ((self.pki.ca_cert, "account-ca.pem"), (self.device.cert, "device.crt"),
                          (self.device.key, "device.key")):
            shutil.copy(src, etc / name)
            (etc / name).chmod(0o644)
        self.log["preconfigured_install"] = self.root.apt(*CONFOLD, "install", "classcam")
        assert self.log["preconfigured_install"].returncode == 0

    class _Daemon:
        def __init__(self, unit: Unit):
            self.unit = unit
            self.journal = unit.root.file("root", f"daemon-{len(unit.log)}.log")

        def __enter__(self) -> Path:
            """Start the installed daemon as its unit would (user classcam, /run/classcam,
            working directory /tmp), with mock pins; wait until it is ready."""
            root = self.unit.root
            root.run("install", "-d", "-o", "classcam", "-g", "classcam", "-m", "0711",
                     "/run/classcam")
            self.proc = root.popen(["classcam", "run"], user="classcam", env=MOCK_PINS,
                                   log=self.journal, cwd="/tmp")
            deadline = time.monotonic() + 120
            while "ready: device" not in self.journal.read_text(errors="replace"):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    pytest.fail(f"the daemon did not become ready:\n{self.journal.read_text()}")
                time.sleep(0.1)
            return self.journal

        def __exit__(self, *exc) -> None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            self.unit.log["daemon_exit"] = code
            self.unit.log["daemon_journal"] = self.journal.read_text(errors="replace")

    def daemon(self) -> _Daemon:
        return self._Daemon(self)


def _configure(text: str, url: str) -> str:
    """IT's edits to the shipped configuration: the unit's id and its uploads."""
    edits = [('id = "classcam-unit"', f'id = "{DEVICE_ID}"'),
             ('url = ""', f'url = "{url}"'),
             ('# ca_bundle = "/etc/classcam/account-ca.pem"', 'ca_bundle = "/etc/classcam/account-ca.pem"'),
             ('# client_cert = "/etc/classcam/device.crt"', 'client_cert = "/etc/classcam/device.crt"'),
             ('# client_key = "/etc/classcam/device.key"', 'client_key = "/etc/classcam/device.key"'),
             # The journal's lines wait for the health tick (P9): a 1 s period lets the test read
             # "ready" within a second, not five minutes.
             ("period_s = 300", "period_s = 1")]
    for old, new in edits:
        assert old in text, f"config/classcam.toml no longer has {old!r}"
        text = text.replace(old, new, 1)
    return text


# -- roots, the repository, foreign apt -------------------------------------------------------


@dataclass
class Root:
    """A Debian 12 root made with mmdebstrap; commands run in it with chroot, with /proc
    mounted in a private mount namespace (nothing stays mounted after a command)."""

    path: Path
    arch: str

    def file(self, *parts: str) -> Path:
        return self.path.joinpath(*(p.lstrip("/") for p in parts))

    def run(self, *argv: str, user: str | None = None, check: bool = True, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(self._argv(list(argv), user, env, "/"), capture_output=True,
                                text=True, timeout=timeout, env={"PATH": PATH})
        result.stdout += result.stderr
        if check:
            assert result.returncode == 0, f"{' '.join(argv)}: {result.stdout}"
        return result

    def popen(self, argv: list[str], user: str | None, env: dict, log: Path,
              cwd: str) -> subprocess.Popen:
        """A long-running command; every step from unshare to the program is an exec, so the
        process returned is the program itself and a signal reaches it."""
        with open(log, "ab") as out:
            return subprocess.Popen(self._argv(argv, user, env, cwd), stdout=out,
                                    stderr=subprocess.STDOUT, env={"PATH": PATH})

    def apt(self, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        """apt-get, unattended, as IT's scripts run it; the result says how it went."""
        return self.run("apt-get", "-y", *args, check=False,
                        timeout=timeout or APT_TIMEOUT[self.arch],
                        env={"DEBIAN_FRONTEND": "noninteractive"})

    def dpkg_status(self, package: str) -> tuple[str, str]:
        out = self.run("dpkg-query", "-W", "-f=${Status}|${Version}", package).stdout
        status, version = out.split("|")
        return status, version

    def passwd(self, name: str) -> list[str]:
        return self._entry("passwd", name)

    def group(self, name: str) -> list[str]:
        return self._entry("group", name)

    def user_name(self, uid: int) -> str:
        for line in self.file("etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if int(fields[2]) == uid:
                return fields[0]
        return str(uid)

    def find_named(self, word: str) -> list[str]:
        """Every path in the root whose name contains `word`."""
        return sorted("/" + str(p.relative_to(self.path)) for p in self.path.rglob(f"*{word}*")
                      if not str(p.relative_to(self.path)).startswith(("proc/", "sys/", "dev/")))

    def _entry(self, database: str, name: str) -> list[str]:
        for line in self.file("etc", database).read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return fields
        return []

    def _argv(self, argv: list[str], user: str | None, env: dict | None, cwd: str) -> list[str]:
        inner = ["env", "-i", "-C", cwd, f"PATH={PATH}", "LANG=C.UTF-8",
                 *(f"{k}={v}" for k, v in (env or {}).items())]
        if user:
            inner += ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--"]
        return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', str(self.path),
                *inner, *argv]


@dataclass
class AptRepo:
    """The school's repository (packaging/publish-repo), shown to a root at /srv/classcam-repo
    as IT's units would reach it over HTTPS."""

    path: Path
    gnupg: Path
    impostor_keyring: Path

    @property
    def keyring(self) -> Path:
        return self.gnupg / "classcam-archive-keyring.gpg"

    def publish(self, *debs: Path) -> None:
        _check([REPO / "packaging" / "publish-repo", "--repo", self.path, "--gnupghome",
                self.gnupg, *debs], timeout=300)

    def add_to(self, root: Root, keyring: Path | None = None) -> None:
        """What IT does on a unit (README): the key, the source, then apt update."""
        served = root.file("srv/classcam-repo")
        shutil.rmtree(served, ignore_errors=True)
        shutil.copytree(self.path / "public", served)
        shutil.copy(keyring or self.keyring, root.file("etc/apt/keyrings/classcam.gpg"))
        root.file("etc/apt/sources.list.d/classcam.sources").write_text(
            "Types: deb\nURIs: file:/srv/classcam-repo\nSuites: bookworm\nComponents: main\n"
            "Signed-By: /etc/apt/keyrings/classcam.gpg\n")


class _ForeignApt:
    """apt on this machine resolving for another architecture against Debian 12 and our
    repository, in a directory of its own (an empty dpkg database: everything is resolved)."""

    def __init__(self, path: Path, arch: str, repo: AptRepo):
        self.path, self.arch = path, arch
        for d in ("etc/apt/sources.list.d", "etc/apt/apt.conf.d", "etc/apt/preferences.d",
                  "etc/apt/trusted.gpg.d", "var/lib/apt/lists/partial",
                  "var/cache/apt/archives/partial", "var/lib/dpkg"):
            (path / d).mkdir(parents=True, exist_ok=True)
        (path / "var/lib/dpkg/status").touch()
        (path / "etc/apt/sources.list").write_text(
            f"deb [arch={arch} signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
            f"{MIRROR} {SUITE} main\n"
            f"deb [arch={arch} signed-by={repo.keyring}] file:{repo.path / 'public'} {SUITE} main\n")
        update = self._apt("update")
        assert update.returncode == 0 and "W:" not in update.stdout, update.stdout

    def simulate_install(self, package: str) -> str:
        plan = self._apt("install", "--simulate", package)
        assert plan.returncode == 0, plan.stdout
        return plan.stdout

    def _apt(self, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["apt-get", "-o", f"Dir={self.path}/",
             "-o", f"Dir::State::status={self.path}/var/lib/dpkg/status",
             "-o", f"APT::Architecture={self.arch}", "-o", f"APT::Architectures={self.arch}",
             "-o", "Acquire::http::Timeout=30", "-o", "Acquire::Retries=2",
             "-o", "Acquire::Languages=none", "-o", "Debug::NoLocking=1",
             # A scratch directory of root's: no point dropping to _apt to fetch into it.
             "-o", "APT::Sandbox::User=root", *args],
            capture_output=True, text=True, timeout=600)
        result.stdout += result.stderr
        return result


class _RootMaker:
    """mmdebstrap, one retry (an emulated first boot has been seen to fail once), cancellable."""

    def __init__(self):
        self._procs: list[subprocess.Popen] = []
        self._cancelled = False

    def make(self, path: Path, arch: str) -> Root:
        log = path.with_suffix(".log")
        code: int | str = "not run"
        for _ in range(2):
            if self._cancelled:
                break
            if path.exists():
                _remove_root(path)
            with open(log, "w") as out:
                proc = subprocess.Popen(
                    ["mmdebstrap", "--variant=minbase", "--mode=root", f"--arch={arch}",
                     "--dpkgopt=force-unsafe-io", '--aptopt=Acquire::http::Timeout "30"',
                     '--aptopt=Acquire::Retries "2"', SUITE, str(path), MIRROR],
                    stdout=out, stderr=subprocess.STDOUT)
                self._procs.append(proc)
                try:
                    code = proc.wait(ROOT_TIMEOUT[arch])
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    code = "timed out"
            if code == 0:
                return Root(path, arch)
        raise AssertionError(f"mmdebstrap {arch} failed ({code}):\n" + log.read_text()[-3000:])

    def cancel(self) -> None:
        self._cancelled = True
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()


def _remove_root(path: Path) -> None:
    """Delete a root, never what may be mounted inside it."""
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{path}/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


def _runs_arm64() -> bool:
    """Whether arm64 programs run here (qemu registered with binfmt_misc; ./dev test-deb
    registers it when the kernel allows)."""
    flag = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    return flag.exists() and flag.read_text().startswith("enabled")


# -- building and checking packages ----------------------------------------------------------


def _build(arch: str, out: Path, version: str | None = None, tree: Path = REPO,
           fast: bool = False) -> Path:
    """packaging/build-deb; `fast` (gzip, not xz) changes the file's size, not its contents."""
    cmd = [tree / "packaging" / "build-deb", "--arch", arch, "--out", out, "--no-lintian"]
    cmd += ["--version", version] if version else []
    cmd += ["--fast"] if fast else []
    env = dict(os.environ, CLASSCAM_PACKAGING_CACHE=str(REPO / ".cache" / "packaging"))
    result = _check(cmd, timeout=BUILD_TIMEOUT, env=env)
    built = re.search(r"^build-deb: (\S+\.deb) \(", result.stdout, re.M)
    assert built, result.stdout
    return Path(built.group(1))


def _assert_lintian_clean(deb: Path) -> None:
    """No error; each warning that remains, and each override, is explained in
    debian/README.source."""
    # --fail-on none: overridden tags shown count as failures otherwise; the lines decide here.
    out = _check(["lintian", "--fail-on", "none", "--tag-display-limit", "0", "--show-overrides",
                  deb], timeout=900).stdout
    errors = [line for line in out.splitlines() if line.startswith("E:")]
    assert errors == []
    explained = (REPO / "debian" / "README.source").read_text()
    kept = {line.split()[2] for line in out.splitlines() if line[:2] in ("W:", "O:")}
    assert {tag for tag in kept if f"`{tag}`" not in explained} == set(), out


def _assert_requirements_and_imports(root: Root) -> None:
    """Every requirement of every vendored distribution is met, with its version, by the
    virtualenv or by the Debian packages after it; and every module imports in the root's own
    Python (so a missing shared library or a numpy it was not built for would show)."""
    check = _check(["/usr/bin/python3", REPO / "packaging" / "wheels.py", "check",
                    "--site", root.file(SITE), "--system", root.file("usr/lib/python3/dist-packages"),
                    "--arch", root.arch], timeout=120, ok=(0, 1))
    assert check.returncode == 0, check.stdout
    site = root.file(SITE)
    modules = sorted({p.stem if p.suffix == ".py" else p.name for p in site.iterdir()
                      if not p.name.startswith("_") and (p.suffix == ".py" or
                                                         (p / "__init__.py").exists())})
    modules += DAEMON_MODULES
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\nprint('ok')"
    imported = root.run("/usr/lib/classcam/bin/python3", "-I", "-c", code, *modules,
                        timeout=APT_TIMEOUT[root.arch], env=MOCK_PINS)
    assert imported.stdout.strip().endswith("ok"), imported.stdout


def _check(cmd: list, timeout: float, ok: tuple[int, ...] = (0,), env: dict | None = None) \
        -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                            timeout=timeout, env=env)
    result.stdout += result.stderr
    assert result.returncode in ok, f"{' '.join(map(str, cmd))}:\n{result.stdout[-4000:]}"
    return result


def _version() -> str:
    return subprocess.run(["dpkg-parsechangelog", "-l", REPO / "debian" / "changelog", "-S",
                           "Version"], capture_output=True, text=True, check=True).stdout.strip()


def _copy_tree(source: Path, into: Path) -> None:
    """The files git has (tracked, or new and not ignored), as build-deb takes them."""
    listing = subprocess.run(["git", "-C", source, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], capture_output=True, check=True).stdout
    for name in filter(None, listing.decode().split("\0")):
        src = source / name
        if src.exists() or src.is_symlink():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name, follow_symlinks=False)


def _digests(directory: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(directory.iterdir()) if p.is_file()}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _wheels_cached(arch: str) -> bool:
    return subprocess.run(["/usr/bin/python3", REPO / "packaging" / "wheels.py", "fetch", "--arch",
                           arch, "--offline"], capture_output=True, timeout=120).returncode == 0


def _unreachable(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=15) as response:
            response.read(1)
    except (OSError, ValueError) as e:
        return str(e)
    return None

