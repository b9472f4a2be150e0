#!/usr/bin/python3
"""The Python half of the Debian package: the daemon's private virtualenv in /usr/lib/classcam,
built for a target architecture without running any of its code.

    packaging/wheels.py lock                          # re-resolve wheels.lock on PyPI (network)
    packaging/wheels.py fetch --arch arm64            # download the locked wheels (network)
    packaging/wheels.py venv --arch arm64 --dest debian/classcam   # assemble the tree (offline)
    packaging/wheels.py check --site S --system D     # every requirement met, versions included

Why a virtualenv assembled here rather than dh-virtualenv: dh-virtualenv runs pip inside the
build, so it can only build for the architecture it runs on; the Pi's package would need an
arm64 builder or an emulated one. pip can install wheels *for another platform* into a directory
(`--platform ... --target`), and a virtualenv is only a `pyvenv.cfg` and a symlink to
/usr/bin/python3, the same on every architecture. So both packages come from this machine, every
file in them is owned by dpkg (nothing is made or pip-installed at install time), and the
compiled wheels are exactly those pinned, with their hashes, in wheels.lock.

The virtualenv sees the system's site-packages (include-system-site-packages), after its own:
the camera stack (picamera2, libcamera, lgpio) only exists as Raspberry Pi OS packages, and
numpy must be the one picamera2 was built against. The distributions in APT_PROVIDED therefore
come from apt (debian/control's Depends), not from PyPI.
"""
from __future__ import annotations

import argparse
import csv
import email.parser
import fnmatch
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
LOCK = HERE / "wheels.lock"

# The project's own distributions that go into the package, as pip would name them: a directory
# (relative to the repository) and the extras to install. The first one's requirements decide
# what is vendored; each must build a pure-Python wheel. When the Python code is split into
# several distributions, list each one the daemon needs here: the daemon (the repository's root)
# and classcam-teacher (dist/teacher: the shared formats and the one `classcam` command, which
# the daemon's distribution adds its commands to). classcam-sim (dist/sim) is never packaged.
LOCAL_DISTS = [".[pi]", "dist/teacher"]

# Import packages that a local distribution carries but the appliance must not: the simulator
# is for PCs and tests (DESIGN.md section 3: hwsim is "not installed with the daemon").
EXCLUDED_PACKAGES = ["hwsim"]

# Files a vendored wheel carries that the daemon never uses and Debian's rules refuse: reportlab's
# demonstration fonts. Its Type 1 files (*.pfb) lintian reports as Adobe-copyrighted fragments
# (license-problem-font-adobe-copyrighted-fragment, an error); its Vera TrueType files duplicate
# Debian's and forbid embedding. The standard fonts' metrics are Python modules of reportlab's,
# and the notice sheet embeds Debian's DejaVu. Each entry is a glob in site-packages.
PRUNED_FILES = ["reportlab/fonts/*.pfb", "reportlab/fonts/*.afm", "reportlab/fonts/*.ttf",
                "reportlab/fonts/DarkGarden*"]

# Requirements met by Debian packages instead of PyPI wheels: the distribution name, the Debian
# package (debian/control names it in Depends) and the version Debian 12 has, which the lock is
# resolved against.
APT_PROVIDED = {
    # picamera2 and simplejpeg (Raspberry Pi OS) are compiled against Debian's numpy: a second
    # numpy in the same process breaks them.
    "numpy": ("python3-numpy", "1.24.2"),
    # Debian's certifi answers /etc/ssl/certs/ca-certificates.crt, so "the system's CAs" (the
    # default of [upload] ca_bundle) are the system's, and a school's CA added with
    # update-ca-certificates is trusted.
    "certifi": ("python3-certifi", "2022.9.24"),
    # PyPI has only an sdist, compiled against libsystemd: Debian's is the same code, built for
    # each architecture (the journal's fields and sd_notify).
    "systemd-python": ("python3-systemd", "235"),
    # PyPI has only an sdist, compiled against the kernel's input headers (the PIN pad's keypad).
    "evdev": ("python3-evdev", "1.6.1"),
    # PyPI's wheel bundles its own libjpeg, libpng, freetype, zlib... (lintian: embedded-library);
    # Debian's is built against the system's, which get its security updates.
    "pillow": ("python3-pil", "9.4.0"),
}

# Requirements of the `pi` extra that only Raspberry Pi OS packages (debian/control recommends
# them; plain Debian has none): never vendored, never checked in a Debian 12 root.
RASPBERRY_PI_OS = {"lgpio": "python3-lgpio"}

PYTHON = "3.11"  # Debian 12's python3; the lock's compiled wheels are for this ABI only
VENV = Path("usr/lib/classcam")  # inside the package
SITE = VENV / "lib" / f"python{PYTHON}" / "site-packages"
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}  # Debian architecture -> wheel machine
ELF_MACHINES = {"amd64": "Advanced Micro Devices X86-64", "arm64": "AArch64"}  # readelf -h
GLIBC = 36  # Debian 12's glibc is 2.36: the newest manylinux tag a wheel may have
NETWORK_TIMEOUT_S = 30


class PackagingError(Exception):
    """The package cannot be built as asked; the message says what to do."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="packaging/wheels.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    lock = sub.add_parser("lock", help="resolve the requirements on PyPI and rewrite wheels.lock")
    lock.set_defaults(func=lambda a: write_lock(LOCK))
    fetch = sub.add_parser("fetch", help="download the locked wheels for ARCH into the cache")
    fetch.add_argument("--arch", choices=MACHINES, required=True)
    fetch.add_argument("--cache", type=Path, default=default_cache())
    fetch.add_argument("--offline", action="store_true", help="only check the cache has them all")
    fetch.set_defaults(func=lambda a: fetch_wheels(a.arch, a.cache, a.offline))
    venv = sub.add_parser("venv", help="assemble /usr/lib/classcam for ARCH under DEST (offline)")
    venv.add_argument("--arch", choices=MACHINES, required=True)
    venv.add_argument("--dest", type=Path, required=True, help="the package's root, e.g. debian/classcam")
    venv.add_argument("--cache", type=Path, default=default_cache())
    venv.add_argument("--substvars", type=Path, help="write vendored:Depends here")
    venv.set_defaults(func=lambda a: build_venv(a.arch, a.dest, a.cache, a.substvars))
    check = sub.add_parser("check", help="check every requirement of the installed tree is met")
    check.add_argument("--site", type=Path, required=True, help="the virtualenv's site-packages")
    check.add_argument("--system", type=Path, action="append", default=[],
                       help="a system dist-packages directory (repeatable)")
    check.add_argument("--arch", choices=MACHINES, required=True)
    check.set_defaults(func=lambda a: check_requirements(a.site, a.system, a.arch))
    args = p.parse_args(argv)
    try:
        result = args.func(args)
    except PackagingError as e:
        print(f"wheels.py: {e}", file=sys.stderr)
        return 1
    if isinstance(result, list):  # problems found by `check`
        for line in result:
            print(line, file=sys.stderr)
        return 1 if result else 0
    return 0


def default_cache() -> Path:
    """Downloads are kept between builds here (ignored by git)."""
    return Path(os.environ.get("CLASSCAM_PACKAGING_CACHE", REPO / ".cache" / "packaging")) / "wheels"


# -- lock ------------------------------------------------------------------------------------


def write_lock(path: Path) -> None:
    """Resolve the local distributions' requirements for every architecture and pin each wheel
    with its hash. The same versions must resolve on every architecture."""
    with tempfile.TemporaryDirectory(prefix="classcam-lock-") as tmp:
        local = build_local_wheels(REPO, Path(tmp) / "local")
        pins: dict[str, tuple[str, dict[str, str]]] = {}  # name -> version, {machine: sha256}
        for arch, machine in MACHINES.items():
            requirements = Path(tmp) / f"requirements-{arch}.txt"
            requirements.write_text("\n".join(vendored_requirements(local, arch)) + "\n")
            constraints = Path(tmp) / "apt-provided.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, (_, v) in APT_PROVIDED.items()))
            report = Path(tmp) / f"report-{arch}.json"
            _pip("install", "--dry-run", "--ignore-installed", "--report", str(report),
                 "--target", str(Path(tmp) / "unused"), *_platform_args(arch),
                 "-r", str(requirements), "-c", str(constraints))
            for item in json.loads(report.read_text())["install"]:
                name = canonicalize_name(item["metadata"]["name"])
                version = item["metadata"]["version"]
                if name in APT_PROVIDED:
                    continue
                sha256 = item["download_info"]["archive_info"]["hashes"]["sha256"]
                known_version, hashes = pins.setdefault(name, (version, {}))
                if known_version != version:
                    raise PackagingError(f"{name} resolves to {known_version} and {version} on "
                                         "different architectures; pin it in setup.py")
                hashes[machine] = sha256
    lines = ["# The Python wheels vendored into the Debian package, with their hashes for each",
             "# architecture. Generated by `packaging/wheels.py lock`; do not edit by hand.",
             f"# Resolved for CPython {PYTHON} on " + ", ".join(MACHINES.values()) +
             "; from apt instead: " + ", ".join(APT_PROVIDED) + "."]
    for name in sorted(pins):
        version, hashes = pins[name]
        lines.append(f"{name}=={version} \\")
        unique = sorted(set(hashes.values()))
        lines += [f"    --hash=sha256:{h}" + (" \\" if i < len(unique) - 1 else "")
                  for i, h in enumerate(unique)]
    path.write_text("\n".join(lines) + "\n")
    print(f"{path}: {len(pins)} wheels pinned")


def vendored_requirements(local_wheels: list[Path], arch: str) -> list[str]:
    """What the local distributions require on `arch`, less themselves and what apt provides."""
    local_names = {_wheel_name(w) for w in local_wheels}
    wanted = []
    for wheel, extras in zip(local_wheels, [_dist_extras(d) for d in LOCAL_DISTS], strict=True):
        for req in _requires(_wheel_metadata(wheel)):
            if not _applies(req, arch, extras):
                continue
            name = canonicalize_name(req.name)
            if name in local_names or name in APT_PROVIDED or name in RASPBERRY_PI_OS:
                continue
            req.marker = None
            wanted.append(str(req))
    return sorted(set(wanted))


# -- fetch -----------------------------------------------------------------------------------


def fetch_wheels(arch: str, cache: Path, offline: bool = False) -> None:
    """Make sure every locked wheel for `arch` is in the cache, hash-checked: from the cache
    alone if it has them all, else from PyPI (unless `offline`)."""
    into = cache / arch
    into.mkdir(parents=True, exist_ok=True)
    args = ["download", "-q", "--no-deps", "--require-hashes", *_platform_args(arch),
            "-d", str(into), "-r", str(LOCK)]
    try:
        _pip(*args, "--find-links", str(into), offline=True, quiet=True)
        return
    except PackagingError:
        if offline:
            raise PackagingError(f"{into} lacks some of the locked wheels") from None
    _pip(*args)


# -- venv ------------------------------------------------------------------------------------


def build_venv(arch: str, dest: Path, cache: Path, substvars: Path | None) -> None:
    """Assemble the virtualenv under `dest` from the cached, locked wheels and the local
    distributions, for `arch`. Runs nothing of the target's code and needs no network."""
    venv = dest / VENV
    if venv.exists():
        shutil.rmtree(venv)
    site = dest / SITE
    _make_venv_skeleton(venv)
    with tempfile.TemporaryDirectory(prefix="classcam-venv-") as tmp:
        local = build_local_wheels(REPO, Path(tmp) / "local")
        requirements = Path(tmp) / "requirements.txt"
        requirements.write_text(LOCK.read_text() + "".join(
            f"{_wheel_name(w)}=={_wheel_version(w)} --hash=sha256:{_sha256(w)}\n" for w in local))
        scripts = Path(tmp) / "target"
        _pip("install", "--no-index", "--find-links", str(cache / arch),
             "--find-links", str(Path(tmp) / "local"), "--no-deps", "--require-hashes",
             "--no-compile", *_platform_args(arch), "--target", str(scripts),
             "-r", str(requirements), offline=True)
        _move_tree(scripts, site)
        commands = console_scripts(local)
        local_names = {_wheel_name(w) for w in local}
    for name, target in commands.items():
        _write_command(dest / "usr/bin" / name, target)
    for package in EXCLUDED_PACKAGES:
        _exclude(site, package)
    for pattern in PRUNED_FILES:
        _prune(site, pattern)
    problems = _names_unmet(site, arch)
    if problems:
        raise PackagingError("requirements not in wheels.lock nor in APT_PROVIDED (run "
                             "`packaging/wheels.py lock`):\n  " + "\n  ".join(problems))
    needs = native_needs(dest / VENV, arch)
    _write_licences(site, dest / "usr/share/doc/classcam/python-libraries.txt", local_names)
    if substvars is not None:
        with substvars.open("a") as f:
            f.write(f"vendored:Depends={', '.join(needs)}\n")
    print(f"{venv}: {sum(1 for _ in site.glob('*.dist-info'))} distributions; "
          f"native needs: {', '.join(needs) or 'none'}")


def console_scripts(local_wheels: list[Path]) -> dict[str, str]:
    """The commands the local distributions define (name -> "module:function"): the package
    installs these, and no other distribution's scripts."""
    commands = {}
    for wheel in local_wheels:
        with zipfile.ZipFile(wheel) as z:
            points = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
            text = z.read(points[0]).decode() if points else ""
        section = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif section == "console_scripts" and "=" in line:
                name, target = (part.strip() for part in line.split("=", 1))
                commands[name] = target
    return commands


def native_needs(tree: Path, arch: str) -> list[str]:
    """Debian dependencies of the compiled files under `tree`: each shared library they load
    that the tree does not carry itself, mapped to its package. Fails on a file built for
    another architecture, or on a library this table does not know (decide, then add it)."""
    known = {"libc.so.6": "libc6", "libm.so.6": "libc6", "libdl.so.2": "libc6",
             "libpthread.so.0": "libc6", "librt.so.1": "libc6", "libutil.so.1": "libc6",
             "libmvec.so.1": "libc6",
             "ld-linux-x86-64.so.2": "libc6", "ld-linux-aarch64.so.1": "libc6",
             "libgcc_s.so.1": "libgcc-s1", "libstdc++.so.6": "libstdc++6", "libz.so.1": "zlib1g"}
    carried = {p.name for p in tree.rglob("*.so*") if p.is_file()}
    needed: set[str] = set()
    glibc = 0
    for path in elf_files(tree):
        machine = re.search(r"Machine:\s*(.*)", _readelf(path, "-h"))
        if machine is None or machine.group(1).strip() != ELF_MACHINES[arch]:
            raise PackagingError(f"{path} is not built for {arch}: "
                                 f"{machine.group(1) if machine else 'unreadable ELF header'}")
        dynamic = _readelf(path, "-d")
        needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
        versions = _readelf(path, "-V")
        glibc = max([glibc] + [int(m) for m in re.findall(r"GLIBC_2\.(\d+)", versions)])
    missing = sorted(n for n in needed - carried if n not in known)
    if missing:
        raise PackagingError(f"compiled files need libraries the package does not carry and "
                             f"packaging/wheels.py does not map to a Debian package: {missing}")
    if glibc > GLIBC:
        raise PackagingError(f"a compiled file needs glibc 2.{glibc}; Debian 12 has 2.{GLIBC}")
    packages = sorted({known[n] for n in needed - carried if n in known})
    return [f"libc6 (>= 2.{glibc})" if p == "libc6" and glibc else p for p in packages]


def elf_files(tree: Path) -> list[Path]:
    """Every ELF file under `tree` (symlinks not followed)."""
    found = []
    for path in sorted(tree.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                if f.read(4) == b"\x7fELF":
                    found.append(path)
    return found


def _make_venv_skeleton(venv: Path) -> None:
    """A virtualenv is a pyvenv.cfg and python symlinks; written for where it will be installed
    (/usr/lib/classcam), not where it is built, with symlinks relative as Debian wants."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages",
                    str(venv)], check=True)
    shutil.rmtree(venv / "include", ignore_errors=True)  # for C extensions built in place: none
    bindir = venv / "bin"
    for item in bindir.iterdir():
        if item.name.startswith(("activate", "Activate")):
            item.unlink()
        elif item.is_symlink():
            item.unlink()
            item.symlink_to(os.path.relpath(f"/usr/bin/python{PYTHON}", f"/{VENV}/bin"))
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n"
                                     f"version = {PYTHON}\n")


def _move_tree(target: Path, site: Path) -> None:
    """Move pip's --target tree into site-packages; its bin/ (scripts with the build's python
    on their #! line) is left behind: `_write_command` makes the package's commands."""
    site.mkdir(parents=True, exist_ok=True)
    for item in target.iterdir():
        if item.name != "bin":
            shutil.move(str(item), site / item.name)


def _write_command(path: Path, target: str) -> None:
    """/usr/bin/NAME for an entry point "module:function": a shell script that runs it in the
    virtualenv's python, isolated (-I: no PYTHON* variables, no current directory or user
    site-packages on sys.path, so nothing but the package's code can run as root)."""
    module, _, function = target.partition(":")
    if not re.fullmatch(r"[\w.]+", module) or not re.fullmatch(r"[\w.]+", function):
        raise PackagingError(f"{path.name}: unexpected entry point {target!r}")
    code = (f"import sys; from {module} import {function.split('.')[0]}; "
            f"sys.argv[0] = {path.name!r}; sys.exit({function}())")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n"
                    f"# {path.name}: {target} in classcam's own Python (/{VENV}, a virtualenv).\n"
                    f"exec /{VENV}/bin/python3 -I -c \"{code}\" \"$@\"\n")
    path.chmod(0o755)


def _exclude(site: Path, package: str) -> None:
    """Remove an import package from the tree, and from its distribution's RECORD and
    top_level.txt, so the metadata stays true to the files."""
    shutil.rmtree(site / package, ignore_errors=True)
    for record in site.glob("*.dist-info/RECORD"):
        rows = list(csv.reader(io.StringIO(record.read_text())))
        kept = [r for r in rows if r and not r[0].startswith(f"{package}/")]
        if len(kept) != len(rows):
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(kept)
            record.write_text(out.getvalue())
            top = record.parent / "top_level.txt"
            if top.exists():
                top.write_text("".join(f"{n}\n" for n in top.read_text().split() if n != package))


def _prune(site: Path, pattern: str) -> None:
    """Remove the files in `site` that match the glob `pattern`, and their RECORD rows."""
    for path in site.glob(pattern):
        if path.is_file():
            path.unlink()
    for record in site.glob("*.dist-info/RECORD"):
        rows = list(csv.reader(io.StringIO(record.read_text())))
        kept = [r for r in rows if r and not fnmatch.fnmatch(r[0], pattern)]
        if len(kept) != len(rows):
            out = io.StringIO()
            csv.writer(out, lineterminator="\n").writerows(kept)
            record.write_text(out.getvalue())


def _names_unmet(site: Path, arch: str) -> list[str]:
    """Requirements (by name) that neither the tree nor APT_PROVIDED meets; versions are
    checked where the system's packages are installed (`check`)."""
    dists = _distributions([site])
    problems = []
    for name, (meta, _) in sorted(dists.items()):
        for req in _requires(meta):
            if _applies(req, arch, set()) and canonicalize_name(req.name) not in dists \
                    and canonicalize_name(req.name) not in APT_PROVIDED:
                problems.append(f"{name} needs {req}")
    return problems


def _write_licences(site: Path, out: Path, local: set[str]) -> None:
    """Every vendored distribution with its version and licence, for debian/copyright."""
    rows = []
    for name, (meta, _) in sorted(_distributions([site]).items()):
        if name in local:
            continue  # this package itself: debian/copyright
        licence = meta.get("License-Expression") or (meta.get("License") or "").split("\n")[0]
        if not licence or len(licence) > 60:
            classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or []
                           if c.startswith("License ::")]
            licence = "; ".join(classifiers) or licence[:60] or "see its dist-info"
        rows.append(f"{meta['Name']} {meta['Version']}: {licence}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("Python libraries in /usr/lib/classcam (from PyPI, pinned in "
                   "packaging/wheels.lock).\nEach one's licence text is in its *.dist-info "
                   "directory there.\n\n" + "\n".join(rows) + "\n")


# -- check -----------------------------------------------------------------------------------


def check_requirements(site: Path, system: list[Path], arch: str) -> list[str]:
    """Problems (none: every requirement of every distribution in the virtualenv is met, with
    its version, by the virtualenv or by the system's packages after it)."""
    ours = _distributions([site])
    everything = {**_distributions(system), **ours}  # the virtualenv comes first on sys.path
    problems = []
    for name, (meta, _) in sorted(ours.items()):
        for req in _requires(meta):
            if not _applies(req, arch, set()):
                continue
            found = everything.get(canonicalize_name(req.name))
            if found is None:
                problems.append(f"{name}: {req}: not installed")
            elif not req.specifier.contains(Version(found[1]), prereleases=True):
                problems.append(f"{name}: {req}: {found[1]} is installed")
    return problems


# -- helpers ---------------------------------------------------------------------------------


def build_local_wheels(source: Path, into: Path) -> list[Path]:
    """Build a wheel of each LOCAL_DISTS directory from a clean copy of the tracked files; each
    must be pure Python (it is built here, for any architecture)."""
    into.mkdir(parents=True, exist_ok=True)
    wheels = []
    for spec in LOCAL_DISTS:
        # The whole tree each time: dist/teacher's project takes its packages from the root
        # (package-dir "../.."), and a fresh copy keeps one build's leftovers out of the next.
        with tempfile.TemporaryDirectory(prefix="classcam-src-") as tmp:
            copy = Path(tmp) / "src"
            _copy_source(source, copy)
            before = set(into.glob("*.whl"))
            _pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(into),
                 str(copy / spec.split("[", 1)[0]), offline=True)
        made = set(into.glob("*.whl")) - before
        if len(made) != 1:
            raise PackagingError(f"{spec}: expected one wheel, got {sorted(made)}")
        wheel = made.pop()
        if not wheel.name.endswith("-py3-none-any.whl"):
            raise PackagingError(f"{wheel.name}: a local distribution must be pure Python")
        wheels.append(wheel)
    return wheels


def _copy_source(directory: Path, into: Path) -> None:
    """The files git tracks (or would: untracked but not ignored) under `directory`."""
    try:
        listing = subprocess.run(["git", "-C", str(directory), "ls-files", "-z", "--cached",
                                  "--others", "--exclude-standard", "."],
                                 check=True, capture_output=True).stdout
        files = [f for f in listing.decode().split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: a source package
        files = [str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file()
                 and not any(part in (".git", ".venv", ".cache", "debian") for part in p.parts)]
    for name in files:
        src = directory / name
        if src.is_file() or src.is_symlink():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, into / name, follow_symlinks=False)


def _dist_extras(spec: str) -> set[str]:
    match = re.search(r"\[([^\]]*)\]", spec)
    return {e.strip() for e in match.group(1).split(",")} if match else set()


def _platform_args(arch: str) -> list[str]:
    machine = MACHINES[arch]
    platforms = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC, 16, -1)]
    platforms.append(f"manylinux2014_{machine}")
    args = ["--only-binary=:all:", "--python-version", PYTHON, "--implementation", "cp",
            "--abi", f"cp{PYTHON.replace('.', '')}"]
    for platform in platforms:
        args += ["--platform", platform]
    return args


def _pip(*args: str, offline: bool = False, quiet: bool = False) -> None:
    """Run this Python's pip, ignoring the machine's pip configuration (a build must not depend
    on it); downloads have a timeout and a couple of retries. `quiet`: no output at all."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input",
           "--timeout", str(NETWORK_TIMEOUT_S), "--retries", "2", *args]
    if offline:
        env["PIP_NO_INDEX"] = "1"
    result = subprocess.run(cmd, env=env, capture_output=quiet)
    if result.returncode != 0:
        where = "" if offline else "; it needs https://pypi.org"
        raise PackagingError(f"pip {args[0]} failed (its reasons are above{where})")


def _readelf(path: Path, flag: str) -> str:
    return subprocess.run(["readelf", "-W", flag, str(path)], check=True, capture_output=True,
                          text=True).stdout


def _distributions(paths: list[Path]) -> dict[str, tuple[email.message.Message, str]]:
    """name -> (metadata, version) of every *.dist-info / *.egg-info under `paths`; a name
    found in an earlier path wins, as on sys.path."""
    found: dict[str, tuple[email.message.Message, str]] = {}
    for path in paths:
        for info in sorted(path.glob("*.dist-info")) + sorted(path.glob("*.egg-info")):
            meta_file = info / "METADATA" if info.suffix == ".dist-info" else info / "PKG-INFO"
            if info.is_file():  # a single-file egg-info
                meta_file = info
            if not meta_file.exists():
                continue
            meta = email.parser.Parser().parsestr(meta_file.read_text(errors="replace"))
            if info.suffix == ".egg-info" and (info / "requires.txt").exists():
                for req in _egg_requires(info / "requires.txt"):
                    meta["Requires-Dist"] = req
            found.setdefault(canonicalize_name(meta["Name"]), (meta, meta["Version"]))
    return found


def _egg_requires(path: Path) -> list[str]:
    """requires.txt's unconditional lines (sections are extras or markers)."""
    reqs = []
    for line in path.read_text().splitlines():
        if line.startswith("["):
            break
        if line.strip():
            reqs.append(line.strip())
    return reqs


def _requires(meta: email.message.Message) -> list[Requirement]:
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def _applies(req: Requirement, arch: str, extras: set[str]) -> bool:
    """Whether `req` applies to CPython PYTHON on Linux/`arch`, with `extras` requested."""
    if req.marker is None:
        return True
    env = {"python_version": PYTHON, "python_full_version": f"{PYTHON}.2",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
           "platform_machine": MACHINES[arch]}
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""}))


def _wheel_metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(z.read(name).decode())


def _wheel_name(wheel: Path) -> str:
    return canonicalize_name(wheel.name.split("-")[0])


def _wheel_version(wheel: Path) -> str:
    return wheel.name.split("-")[1]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()



if __name__ == "__main__":
    sys.exit(main())
