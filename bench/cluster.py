#!/usr/bin/env python3
"""N replicas of the mirror on loopback as one cache, in front of one counting upstream.

The upstream is CNCF Distribution (Debian's docker-registry); its access log counts what it sent.
The replicas are the jar (-Xmx256m each), one cluster (static members on loopback). Four checks,
with figures:

1. A cold burst: 64 clients spread over the replicas pull one 1 GiB blob at once; every client's
   body is hashed (curl | sha256sum). Reports the upstream fetches (must be 1), whether every
   client got every byte right, and the wall time against the same burst served warm (goal: 1.3x
   or less, reported as measured).
2. 30 distinct blobs, each pulled through one replica: one stored copy of each in all.
3. kill -9 of one replica, then every blob pulled again through the others: the refetches must
   equal what it held.
4. It restarts on its disk: every blob pulled through every replica, no refetch.

    bench/cluster.sh 3            the full run (several minutes; 1 GiB, 64 clients)
    bench/cluster.sh 3 --small    what CI runs (seconds; 32 MiB, 12 clients, 9 blobs)
    bench/cluster.sh 3 --output bench/results.md    the table also into that file, between markers

Exit status 1 when a check that must hold did not (fetches, bytes, copies, refetches).
"""
import argparse
import concurrent.futures
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (the helpers of the single-node benchmark)

SECRET = "bench-cluster-secret-0123456789abcdef"


class Cluster:
    def __init__(self, args):
        self.args = args
        self.n = args.replicas
        self.small = args.small
        self.work = tempfile.mkdtemp(prefix="registry-mirror-cluster-")
        self.servers = bench.Servers(self.work)
        self.rows = []
        self.failed = []
        self.procs = [None] * self.n
        self.ports = [bench.free_port() for _ in range(self.n)]
        self.member_ports = [bench.free_port() for _ in range(self.n)]

    # ------------------------------------------------------------------ set-up

    def setup(self):
        w = self.work
        self.size = (32 << 20) if self.small else (1 << 30)
        self.clients = 12 if self.small else 64
        count = 9 if self.small else 30
        print(f"work folder {w}; {self.n} replicas; generating blobs", flush=True)
        self.big = os.path.join(w, "big.bin")
        self.big_digest = bench.make_blob(self.big, self.size)
        self.distinct = []
        for i in range(count):
            path = os.path.join(w, f"blob-{i}.bin")
            self.distinct.append((path, bench.make_blob(path, (256 << 10) if self.small else (4 << 20))))
        self.up_port = bench.free_port()
        bench.registry_config(f"{w}/upstream.yml", self.up_port, f"{w}/upstream-storage")
        self.upstream = self.servers.start("upstream", ["docker-registry", "serve", f"{w}/upstream.yml"])
        self.up = f"http://127.0.0.1:{self.up_port}"
        bench.wait_up(self.up + "/v2/", self.upstream)
        bench.push_blob(self.up, self.big, self.big_digest)
        for path, digest in self.distinct:
            bench.push_blob(self.up, path, digest)
        os.unlink(self.big)
        for i in range(self.n):
            self.start(i)
        self.await_members(range(self.n), self.n)

    def url(self, i):
        return f"http://127.0.0.1:{self.ports[i]}"

    def storage(self, i):
        return os.path.join(self.work, f"replica-{i}")

    def start(self, i):
        members = ", ".join(f"'127.0.0.1:{p}'" for p in self.member_ports)
        config = os.path.join(self.work, f"replica-{i}.yaml")
        with open(config, "w") as f:
            f.write(f"""server: {{port: {self.ports[i]}, host: 127.0.0.1}}
storage: {{path: '{self.storage(i)}', minFree: 0}}
upstreams:
  - name: docker.io
    url: {self.up}
cluster:
  name: bench
  secret: '{SECRET}'
  bind: 127.0.0.1:{self.member_ports[i]}
  members: [{members}]
  url: {self.url(i)}
  failureDetection: 3s
""")
        p = self.servers.start(f"replica-{i}", ["java", "-Xmx256m", "-jar", bench.JAR, "--config", config])
        bench.wait_up(self.url(i) + "/v2/", p, seconds=60)
        self.procs[i] = p

    def members(self, i):
        with urllib.request.urlopen(self.url(i) + "/metrics", timeout=5) as r:
            text = r.read().decode()
        m = re.search(r"(?m)^registrymirror_cluster_members(?:\{[^}]*\})? ([\d.]+)", text)
        return int(float(m.group(1))) if m else 0

    def await_members(self, replicas, n, seconds=60):
        deadline = time.monotonic() + seconds
        for i in replicas:
            while self.members(i) != n:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {i} sees {self.members(i)} members, not {n}")
                time.sleep(0.05)  # polling other processes

    def upstream_gets(self, digest):
        log = f"{self.work}/upstream.log"
        mark = os.urandom(8).hex()
        bench.curl(f"{self.up}/v2/?mark={mark}")
        deadline = time.monotonic() + 10
        while mark not in open(log, errors="replace").read():
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream did not log a request")
            time.sleep(0.01)  # polling the upstream's log
        return bench.upstream_gets(log, digest)

    def copies(self, digest):
        hexa = digest.split(":")[1]
        return [i for i in range(self.n)
                if os.path.exists(os.path.join(self.storage(i), "blobs", "sha256", hexa[:2], hexa))]

    def check(self, name, ok, detail):
        print(f"{name}: {detail} -> {'OK' if ok else 'FAILED'}", flush=True)
        if not ok:
            self.failed.append(name)

    # ------------------------------------------------------------------ workloads

    def burst(self):
        """Every client pulls the big blob through replica (client mod N), hashing it; (wall s, all right)."""
        def one(c):
            return bench.curl_sha256(f"{self.url(c % self.n)}/v2/{bench.REPO}/blobs/{self.big_digest}")
        digests, wall = bench.parallel(self.clients, one)
        return wall, all(d == self.big_digest for d in digests)

    def cold_and_warm(self):
        cold, cold_right = self.burst()
        fetches = self.upstream_gets(self.big_digest)
        warm, warm_right = self.burst()
        ratio = cold / warm
        size = f"{self.size >> 30} GiB" if self.size >= (1 << 30) else f"{self.size >> 20} MiB"
        self.rows.append((f"{self.clients} clients, one {size} blob, cold", f"{cold:.1f} s",
                          f"{self.clients * self.size / cold / (1 << 20):.0f} MiB/s to clients",
                          f"upstream fetches {fetches}; every byte right: {'yes' if cold_right else 'no'}"))
        self.rows.append(("the same burst, warm", f"{warm:.1f} s",
                          f"{self.clients * self.size / warm / (1 << 20):.0f} MiB/s to clients",
                          f"cold/warm {ratio:.2f}× (goal ≤ 1.3×: {'met' if ratio <= 1.3 else 'missed'}); "
                          f"every byte right: {'yes' if warm_right else 'no'}"))
        self.check("one upstream fetch for the cold burst", fetches == 1, f"{fetches} fetches")
        self.check("every client got every byte", cold_right and warm_right, f"cold {cold_right}, warm {warm_right}")
        print(f"cold {cold:.1f} s, warm {warm:.1f} s, ratio {ratio:.2f}", flush=True)

    def pull_all(self, through):
        """Every distinct blob pulled once, blob k through replica through[k % len(through)], hashed."""
        def one(k):
            path, digest = self.distinct[k]
            return bench.curl_sha256(f"{self.url(through[k % len(through)])}/v2/{bench.REPO}/blobs/{digest}") == digest
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return all(pool.map(one, range(len(self.distinct))))

    def total_gets(self):
        log = f"{self.work}/upstream.log"
        self.upstream_gets(self.distinct[0][1])  # settles the log
        return sum(bench.upstream_gets(log, d) for _, d in self.distinct)

    def distinct_blobs(self):
        right = self.pull_all(list(range(self.n)))
        deadline = time.monotonic() + 30
        while any(len(self.copies(d)) != 1 for _, d in self.distinct) and time.monotonic() < deadline:
            time.sleep(0.05)  # commits finish after the last byte is served
        copies = [len(self.copies(d)) for _, d in self.distinct]
        gets = self.total_gets()
        spread = [sum(1 for _, d in self.distinct if i in self.copies(d)) for i in range(self.n)]
        self.rows.append((f"{len(self.distinct)} distinct blobs, each through one replica", "–",
                          f"stored copies {sum(copies)} (per replica {spread})",
                          f"upstream fetches {gets}"))
        self.check("one stored copy of each distinct blob", right and all(c == 1 for c in copies),
                   f"copies {copies}")
        self.check("one upstream fetch of each distinct blob", gets == len(self.distinct), f"{gets} fetches")

    def kill_and_return(self):
        victim = self.n - 1
        held = [d for _, d in self.distinct if victim in self.copies(d)]
        before = self.total_gets()
        self.procs[victim].send_signal(signal.SIGKILL)
        self.procs[victim].wait()
        start = time.monotonic()
        self.await_members(range(victim), self.n - 1)
        noticed = time.monotonic() - start
        right = self.pull_all(list(range(victim)))
        refetched = self.total_gets() - before
        self.rows.append((f"kill -9 of one replica (it held {len(held)}), every blob pulled again", "–",
                          f"the others saw it go in {noticed:.1f} s",
                          f"refetches {refetched}"))
        self.check("refetches equal the dead replica's share", right and refetched == len(held),
                   f"{refetched} refetched, it held {len(held)}")

        self.start(victim)
        self.await_members(range(self.n), self.n)
        before = self.total_gets()
        right = all(self.pull_all([i]) for i in range(self.n))
        refetched = self.total_gets() - before
        self.rows.append(("it restarts on its disk; every blob through every replica", "–", "–",
                          f"refetches {refetched}"))
        self.check("no refetch after the return", right and refetched == 0, f"{refetched} refetched")

    def report(self):
        cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
        lines = [f"Cluster run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu} cores: {self.n} "
                 f"replicas (-Xmx256m each) on loopback, upstream Distribution "
                 f"{bench.version(['docker-registry', '--version'])}"
                 f"{', small mode' if self.small else ''}.", "",
                 "| check | wall time | figures | upstream |", "|---|---|---|---|"]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in self.rows]
        lines += ["", "All checks held." if not self.failed else "FAILED: " + "; ".join(self.failed)]
        text = "\n".join(lines) + "\n"
        print("\n" + text)
        if self.args.output:
            write_between_markers(self.args.output, text)
            print(f"written to {self.args.output}")

    def run(self):
        try:
            self.setup()
            self.cold_and_warm()
            self.distinct_blobs()
            self.kill_and_return()
            self.report()
            return not self.failed
        except Exception:
            for i in range(self.n):
                log = os.path.join(self.work, f"replica-{i}.log")
                if os.path.exists(log):
                    with open(log, "rb") as f:
                        print(f"--- the end of replica-{i}.log:\n" + f.read()[-3000:].decode("utf-8", "replace"),
                              file=sys.stderr)
            raise
        finally:
            self.servers.stop_all()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)


def write_between_markers(path, text):
    begin, end = "<!-- cluster:begin -->", "<!-- cluster:end -->"
    old = open(path).read() if os.path.exists(path) else ""
    if begin not in old:
        old = old.rstrip("\n") + f"\n\n## Cluster\n\n{begin}\n{end}\n"
    head, rest = old.split(begin, 1)
    tail = rest.split(end, 1)[1]
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{text}{end}{tail}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("replicas", type=int, nargs="?", default=3, help="how many replicas (2 or more)")
    p.add_argument("--small", action="store_true", help="seconds: 32 MiB, 12 clients, 9 blobs (CI)")
    p.add_argument("--output", help="also write the table into this file, between its cluster markers")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args()
    if args.replicas < 2:
        p.error("a cluster needs 2 replicas or more")
    sys.exit(0 if Cluster(args).run() else 1)


if __name__ == "__main__":
    main()
