"""Our upload client against `curl` on the same files, to the same reference server, in one run;
and the uploader's memory while it sends one big segment.

    python bench/upload_vs_curl.py [--small 40] [--big 4] [--reps 15] [--memory-mib 500]
                                   [--server-on-disk] [--quick]

The reference `AccountServer` runs in its own process (`python -m hwsim.account_server`), so its
CPU and memory count against neither client. Every client authenticates with the same device
certificate (mutual TLS) and every run goes to a new recording id, so the server really stores
every file (hashes it, writes it, fsyncs it, renames it).

Files: `--small` random 3 MiB files (a 10 s segment at 2.5 Mb/s) and `--big` random 64 MiB files,
the same set for every way. Each round runs every way once, in a rotated order:

  curl, one process      one `curl --config` with a `next`-separated transfer per file: one
                         process, one TLS connection reused for every PUT (checked with
                         %{num_connects}); `Expect:` off so curl does not wait for 100-continue
  curl, one per file     one curl process per file: adds exec and a TLS handshake per file
  ours, default chunk    one `UploadClient` (one urllib3 PoolManager) in a child process, `put` for
                         each file; chunk_bytes 16 MiB, so each 64 MiB file goes as a HEAD plus
                         four Content-Range PUTs (curl does not do ranges)
  ours, one PUT per file the same with chunk_bytes larger than any file: like for like with curl

Reported per way: MB/s over the whole set (best and median of the rounds), MB/s on the small and
big files alone, client CPU seconds (user+sys: curl from os.wait4, ours from the child's getrusage
around the puts), the server's CPU seconds for that run, and RATIOs ours/curl (aim >= 0.9)
as the median of the rounds' own ratios (both runs of a round saw the same load).

Memory: one `--memory-mib` random file uploaded by a child `UploadClient`, with the default chunk
and as one whole PUT; the parent samples the child's VmRSS every 20 ms from /proc and the child
reports its VmHWM. Printed: RSS before the upload, peak during, growth (aim: flat, under 100 MB).
The peer is curl uploading the same file (its VmHWM).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hwsim.pki import DEVICE, TestPki  # noqa: E402
from procstat import ProcWatcher, loadavg, proc_status  # noqa: E402

OUT = ROOT / "bench" / "out" / "upload_vs_curl"
MIB = 1024 * 1024
SMALL, BIG = 3 * MIB, 64 * MIB
TEACHER = "t-bench"
DEVICE_ID = "sim-unit-1"
DEFAULT_CHUNK = 16 * MIB  # UploadSettings.chunk_bytes's default
PEER = "curl, one process (connection reused)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=40, help="number of 3 MiB files")
    parser.add_argument("--big", type=int, default=4, help="number of 64 MiB files")
    parser.add_argument("--reps", type=int, default=15, help="rounds; every way runs once a round")
    parser.add_argument("--memory-mib", type=int, default=500,
                        help="size of the file for the memory test")
    parser.add_argument("--server-on-disk", action="store_true",
                        help="store on bench/out (disk; fsync is real) instead of /dev/shm")
    parser.add_argument("--quick", action="store_true",
                        help="8 small + 1 big file, 1 round, 128 MiB memory test: a smoke test")
    parser.add_argument("--child-ours", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_ours:
        return _child_ours(json.loads(args.child_ours))
    if args.quick:
        args.small, args.big, args.reps, args.memory_mib = 8, 1, 1, 128

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    store_parent = OUT if args.server_on_disk or not Path("/dev/shm").is_dir() else Path("/dev/shm")
    store = Path(tempfile.mkdtemp(prefix="upload_vs_curl-store-", dir=store_parent))
    load_before = loadavg()
    loads = [load_before]
    server = None
    try:
        pki = TestPki.create(OUT / "pki")
        device = pki.issue(DEVICE_ID, DEVICE)
        tls = {"ca": str(pki.ca_cert), "cert": str(device.cert), "key": str(device.key)}
        print(f"making {args.small} x 3 MiB + {args.big} x 64 MiB random files ...", flush=True)
        files = [_random_file(OUT / "files" / f"small-{i:03}", SMALL) for i in range(args.small)]
        files += [_random_file(OUT / "files" / f"big-{i:03}", BIG) for i in range(args.big)]
        server = Server(store, pki.directory)
        print(f"server {server.url} (pid {server.pid}), storing under {store}; "
              f"load average {load_before:.2f}", flush=True)

        ways = {
            PEER: lambda rid: run_curl(server, tls, files, rid),
            "curl, one process per file": lambda rid: run_curl_each(server, tls, files, rid),
            "ours, default chunk (16 MiB ranges)":
                lambda rid: run_ours(server, tls, files, rid, DEFAULT_CHUNK),
            "ours, one PUT per file": lambda rid: run_ours(server, tls, files, rid, 1 << 40),
        }
        results: dict[str, list[dict]] = {name: [] for name in ways}
        names = list(ways)
        for rep in range(args.reps):
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                rid = secrets.token_hex(16)
                cpu0 = server.cpu()
                result = ways[name](rid)
                result["server_cpu"] = server.cpu() - cpu0
                _check_stored(store, rid, files)
                shutil.rmtree(store / TEACHER / rid)
                results[name].append(result)
            loads.append(loadavg())
            print(f"  round {rep + 1}/{args.reps}: " + ", ".join(
                f"{n.split(',')[0]}{'' if 'reused' in n or 'default' in n else '*'} "
                f"{_rate(results[n][-1]['wall'], files):.0f}" for n in names) + " MB/s",
                flush=True)
        for path, _, _ in files:
            path.unlink()

        print(f"memory: one {args.memory_mib} MiB file ...", flush=True)
        big = _random_file(OUT / "files" / "memory", args.memory_mib * MIB)
        memory = {}
        for name, chunk in (("ours, default chunk (16 MiB ranges)", DEFAULT_CHUNK),
                            ("ours, one whole PUT", 1 << 40), ("curl (peer)", None)):
            rid = secrets.token_hex(16)
            if chunk is None:
                memory[name] = run_curl(server, tls, [big], rid, watch=True)
            else:
                memory[name] = run_ours(server, tls, [big], rid, chunk, watch=True)
            _check_stored(store, rid, [big])
            shutil.rmtree(store / TEACHER / rid)
        big[0].unlink()
        loads.append(loadavg())
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(OUT / "files", ignore_errors=True)  # up to ~900 MB, even after a failure
    load_after = loadavg()
    report(args, files, results, memory, store_parent, load_before, load_after, max(loads))
    shutil.rmtree(OUT, ignore_errors=True)
    return 0


# -- the server, in its own process ---------------------------------------------------------------

class Server:
    """`python -m hwsim.account_server` on a free port, in a child process."""

    def __init__(self, root: Path, pki_dir: Path):
        self._log = open(OUT / "server.log", "w+")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "hwsim.account_server", "--root", str(root),
             "--pki", str(pki_dir), "--port", "0"],
            cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT, text=True)
        self.pid = self._proc.pid
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = re.search(r"account server: (https://\S+)", Path(self._log.name).read_text())
            if m:
                self.url = m[1]
                return
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("the account server did not start:\n"
                           + Path(self._log.name).read_text())

    def cpu(self) -> float:
        """The server process's CPU seconds (user+sys, all threads) so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._log.close()


# -- the peer: curl -------------------------------------------------------------------------------

def _address(server: Server, rid: str, i: int) -> str:
    return f"{server.url}/v1/teachers/{TEACHER}/recordings/{rid}/seg-{i + 1:06}.ts.age"


def _curl_transfer(server: Server, tls: dict, file: tuple, rid: str, i: int) -> list[str]:
    """Config-file lines for one PUT (every option again: `next` resets them)."""
    path, sha, size = file
    return [f"url = {_quote(_address(server, rid, i))}",
            f"upload-file = {_quote(str(path))}",
            f"header = {_quote('X-Classcam-SHA256: ' + sha)}",
            f"header = {_quote(f'X-Classcam-Size: {size}')}",
            'header = "Expect:"',  # no 100-continue round trip (ours does not do one either)
            f"cert = {_quote(tls['cert'])}", f"key = {_quote(tls['key'])}",
            f"cacert = {_quote(tls['ca'])}",
            "output = /dev/null", "silent", "show-error",
            'write-out = "%{http_code} %{num_connects} %{time_total}\\n"']


def run_curl(server: Server, tls: dict, files: list[tuple], rid: str,
             watch: bool = False) -> dict:
    """One curl process PUTting every file in turn over one reused connection."""
    config = OUT / "curl.conf"
    lines: list[str] = []
    for i, file in enumerate(files):
        if i:
            lines.append("next")
        lines += _curl_transfer(server, tls, file, rid, i)
    config.write_text("\n".join(lines) + "\n")
    run = _curl_process(config, watch)
    rows = [line.split() for line in run["out"].splitlines()]
    codes = [r[0] for r in rows]
    if run["rc"] != 0 or codes != ["201"] * len(files):
        raise RuntimeError(f"curl: exit {run['rc']}, answers {codes}\n{run['err']}")
    run.update(connects=sum(int(r[1]) for r in rows), times=[float(r[2]) for r in rows])
    return run


def run_curl_each(server: Server, tls: dict, files: list[tuple], rid: str) -> dict:
    """One curl process per file: what a shell loop around curl pays."""
    config = OUT / "curl-one.conf"
    total = {"wall": 0.0, "cpu": 0.0, "user": 0.0, "sys": 0.0, "connects": 0, "times": []}
    for i, file in enumerate(files):
        config.write_text("\n".join(_curl_transfer(server, tls, file, rid, i)) + "\n")
        run = _curl_process(config)
        if run["rc"] != 0 or not run["out"].startswith("201 "):
            raise RuntimeError(f"curl: exit {run['rc']}, answer {run['out']!r}\n{run['err']}")
        for key in ("wall", "cpu", "user", "sys"):
            total[key] += run[key]
        total["connects"] += int(run["out"].split()[1])
        total["times"].append(run["wall"])
    return total


def _curl_process(config: Path, watch: bool = False) -> dict:
    """Run `curl --config`; wall time from spawn to exit, CPU and VmHWM of that process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(["curl", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = ProcWatcher(proc.pid) if watch else None
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    result = {"out": out, "err": err, "rc": proc.returncode, "wall": wall,
              "cpu": usage.ru_utime + usage.ru_stime, "user": usage.ru_utime,
              "sys": usage.ru_stime}
    if watch:
        sampler.stop()
        result.update(rss_before_mib=sampler.first_rss / 1024,
                      rss_peak_mib=sampler.peak_rss / 1024, samples=sampler.samples,
                      hwm_mib=sampler.peak_hwm / 1024)
    return result


# -- ours: UploadClient in a child process --------------------------------------------------------

def run_ours(server: Server, tls: dict, files: list[tuple], rid: str, chunk: int,
             watch: bool = False) -> dict:
    params = {"url": server.url, **tls, "chunk": chunk, "rid": rid,
              "files": [[str(p), f"seg-{i + 1:06}.ts.age", sha, size]
                        for i, (p, sha, size) in enumerate(files)]}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child-ours", json.dumps(params)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    ready = proc.stdout.readline()
    if not ready.startswith("ready"):
        proc.kill()
        raise RuntimeError(f"ours: child did not start: {ready!r}")
    sampler = ProcWatcher(proc.pid) if watch else None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out = proc.stdout.read()
    proc.wait()
    process_wall = time.perf_counter() - t0
    if sampler:
        sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"ours: child exited with {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["process_wall"] = process_wall
    if sampler:
        result.update(rss_peak_mib=sampler.peak_rss / 1024, samples=sampler.samples)
    return result


def _child_ours(params: dict) -> int:
    from uploader.client import UploadClient, UploadSettings, UploadTarget

    client = UploadClient(UploadSettings(
        url=params["url"], ca_bundle=Path(params["ca"]), client_cert=Path(params["cert"]),
        client_key=Path(params["key"]), chunk_bytes=params["chunk"]))
    targets = [UploadTarget(TEACHER, params["rid"], name, Path(path), sha, size)
               for path, name, sha, size in params["files"]]
    status = proc_status(os.getpid())
    print(f"ready {status['VmRSS']}", flush=True)
    sys.stdin.readline()
    rss_before, hwm_before = proc_status(os.getpid())["VmRSS"], status["VmHWM"]
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for target in targets:
        t1 = time.perf_counter()
        stored = client.put(target)
        times.append(time.perf_counter() - t1)
        if (stored.sha256, stored.size) != (target.sha256, target.size):
            raise SystemExit(f"server stored {stored} for {target.name}")
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    connects = _connections_opened(client)
    client.close()
    user, sys_ = r1.ru_utime - r0.ru_utime, r1.ru_stime - r0.ru_stime
    print(json.dumps({"wall": wall, "cpu": user + sys_, "user": user, "sys": sys_,
                      "times": times, "connects": connects, "rss_before_mib": rss_before / 1024,
                      "hwm_before_mib": hwm_before / 1024,
                      "hwm_mib": proc_status(os.getpid())["VmHWM"] / 1024}), flush=True)
    return 0


def _connections_opened(client) -> int | str:
    """How many connections the client's urllib3 pools opened (a look inside, for the table)."""
    try:
        pools = client._pool.pools
        return sum(pools[key].num_connections for key in pools.keys())
    except (AttributeError, KeyError, TypeError):
        return "?"


# -- memory ---------------------------------------------------------------------------------------

# -- files ----------------------------------------------------------------------------------------

def _random_file(path: Path, size: int) -> tuple[Path, str, int]:
    """`size` random (incompressible) bytes at `path`; (path, sha256 hex, size)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 * MIB))
            f.write(block)
            h.update(block)
            left -= len(block)
    return path, h.hexdigest(), size


def _check_stored(store: Path, rid: str, files: list[tuple]) -> None:
    stored = {p.name: p.stat().st_size for p in (store / TEACHER / rid).glob("seg-*.ts.age")}
    expected = {f"seg-{i + 1:06}.ts.age": size for i, (_, _, size) in enumerate(files)}
    if stored != expected:
        raise RuntimeError(f"server holds {len(stored)} files of {len(expected)} (or wrong sizes)")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# -- the table ------------------------------------------------------------------------------------

def _rate(seconds: float, files: list[tuple]) -> float:
    return sum(size for _, _, size in files) / seconds / 1e6


def report(args, files, results, memory, store_parent, load_before, load_after,
           load_max) -> None:
    total = sum(size for _, _, size in files)
    small_n = sum(1 for _, _, size in files if size == SMALL)
    print()
    print(f"throughput: {len(files)} files ({small_n} x 3 MiB, {len(files) - small_n} x 64 MiB, "
          f"{total / 1e6:.0f} MB), {args.reps} round(s), server storing on "
          f"{'tmpfs (/dev/shm)' if str(store_parent) == '/dev/shm' else 'disk (bench/out)'}")
    print(f"{'':40} {'best MB/s':>9} {'median':>7} {'small':>7} {'big':>7} "
          f"{'client CPU s':>12} {'server CPU s':>12} {'conns':>6}")
    best, cpus = {}, {}
    for name, runs in results.items():
        b = min(runs, key=lambda r: r["wall"])
        best[name] = b
        rates = [_rate(r["wall"], files) for r in runs]
        small_s = sum(t for t, (_, _, s) in zip(b["times"], files, strict=True) if s == SMALL)
        big_s = sum(t for t, (_, _, s) in zip(b["times"], files, strict=True) if s != SMALL)
        small_rate = small_n * SMALL / small_s / 1e6 if small_s else float("nan")
        big_rate = (total - small_n * SMALL) / big_s / 1e6 if big_s else float("nan")
        conns = b.get("connects", "")
        cpu = statistics.median(r["cpu"] for r in runs)
        server_cpu = statistics.median(r["server_cpu"] for r in runs)
        cpus[name] = cpu
        print(f"{name:40} {max(rates):9.0f} {statistics.median(rates):7.0f} {small_rate:7.0f} "
              f"{big_rate:7.0f} {cpu:12.2f} {server_cpu:12.2f} {conns!s:>6}")
    print("  (best: by wall time; small/big: MB/s of that run's per-file times, for curl its "
          "%{time_total}; CPU s: user+sys, median of the\n   rounds; ours: the puts only, "
          "without the interpreter's start-up; conns: TLS connections opened)")
    peer = best[PEER]
    for name in ("ours, one PUT per file", "ours, default chunk (16 MiB ranges)",
                 "curl, one process per file"):
        paired = [c["wall"] / o["wall"] for c, o in zip(results[PEER], results[name], strict=True)]
        print(f"RATIO {name} / curl one process: throughput {statistics.median(paired):.2f} "
              f"median of rounds [{min(paired):.2f}..{max(paired):.2f}], "
              f"{peer['wall'] / best[name]['wall']:.2f} best/best; "
              f"client CPU {cpus[name] / cpus[PEER]:.2f}")
    print("  (aim for ours: throughput >= 0.9. A round's ratio compares two runs of the same "
          "round, which saw the same load)")
    mine = best["ours, one PUT per file"]
    print(f"      ours child process incl. interpreter start-up and imports: "
          f"{mine['process_wall']:.2f} s wall against {mine['wall']:.2f} s of puts")

    print()
    size_mib = args.memory_mib
    print(f"memory: one {size_mib} MiB file ({size_mib * MIB / 1e6:.0f} MB), RSS sampled every "
          f"20 ms from /proc/<pid>/status")
    print(f"{'':40} {'RSS before MiB':>14} {'peak RSS MiB':>12} {'growth MiB':>10} "
          f"{'VmHWM MiB':>9} {'MB/s':>6} {'samples':>7}")
    for name, r in memory.items():
        print(f"{name:40} {r['rss_before_mib']:14.1f} {r['rss_peak_mib']:12.1f} "
              f"{r['rss_peak_mib'] - r['rss_before_mib']:10.1f} {r['hwm_mib']:9.1f} "
              f"{size_mib * MIB / r['wall'] / 1e6:6.0f} {r['samples']:7}")
    ours_peak = max(memory[n]["hwm_mib"] for n in memory if n.startswith("ours"))
    print(f"  (ours: RSS before = after imports and UploadClient(), just before the first put; "
          f"VmHWM is the exact peak,\n   including the imports' own peak of "
          f"{memory['ours, one whole PUT']['hwm_before_mib']:.1f} MiB. curl: first sample "
          f"after exec)")
    print(f"peak RSS of the uploader while sending {size_mib} MiB: {ours_peak:.1f} MiB "
          f"(aim: flat, < 100 MB = 95.4 MiB)")
    print(f"load average (1 min) before {load_before:.2f}, after {load_after:.2f}, highest "
          f"seen between rounds {load_max:.2f}")


if __name__ == "__main__":
    sys.exit(main())
