#!/usr/bin/env python3
"""The mirror with a large cache: N stored items, at a small heap.

Builds a cache folder of N items (blobs as sparse files of realistic sizes named by random digests,
a few real blobs that are served, manifests with real bytes, and tags over many repositories), then
runs the mirror on it three times and prints, for each run: time from launch to /v2/ answering, to a
stored blob served, to a complete index; the live heap after a full collection; the process's RSS.

  1. first start: no index yet (a cache folder from before the index existed); the folders are walked
  2. restart after a clean stop: the index is taken as it was
  3. restart with storage.maxSize at half the stored bytes: the upkeep evicts about half the items;
     the eviction rate, and the latency of lookups (HEAD of stored blobs) made meanwhile

Usage: bench/scale.sh N [--heap 256m] [--keep DIR [--build-only]]
Exits non-zero when a check fails (counts, bytes served, the index's totals).
"""
import argparse
import hashlib
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

JAR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proxy", "target", "registry-mirror.jar")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
REAL_BLOBS = 20


def fail(msg):
    print("FAILED: " + msg, file=sys.stderr)
    sys.exit(1)


def build(root, n, seed=1):
    """Writes n items under root; yields (real blobs [(digest, bytes)], manifests, blob count, total bytes)."""
    rnd = random.Random(seed)
    manifests = min(n // 10, 100_000)
    blobs = n - manifests
    tags = manifests
    repos = max(1, tags // 10)
    now = time.time()
    made = set()
    total = 0

    def folder(kind, hexd):
        d = os.path.join(root, kind, "sha256", hexd[:2])
        if d not in made:
            os.makedirs(d, exist_ok=True)
            made.add(d)
        return d

    real = []
    started = time.monotonic()
    for i in range(blobs):
        if i < REAL_BLOBS:
            body = rnd.randbytes(rnd.randint(1_000, 64_000))
            hexd = hashlib.sha256(body).hexdigest()
            with open(os.path.join(folder("blobs", hexd), hexd), "wb") as f:
                f.write(body)
            real.append(("sha256:" + hexd, body))
            total += len(body)
            continue  # the newest: they outlive the eviction
        hexd = rnd.randbytes(32).hex()
        # Layer sizes: a median of 1 MiB, a mean of 2 MiB, a long tail (capped at 4 GiB); sparse: no space used.
        size = min(int(rnd.lognormvariate(math.log(1 << 20), 1.2)), 4 << 30)
        path = os.path.join(folder("blobs", hexd), hexd)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, size)
        os.close(fd)
        t = now - 86400 - rnd.random() * 90 * 86400  # last used within the past 90 days
        os.utime(path, (t, t))
        total += size
        if i % 1_000_000 == 999_999:
            print(f"  {i + 1} blobs written ({time.monotonic() - started:.0f} s)", flush=True)
    listed = []
    for i in range(manifests):
        body = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE, "n": i}).encode()
        hexd = hashlib.sha256(body).hexdigest()
        d = folder("manifests", hexd)
        with open(os.path.join(d, hexd + ".type"), "w") as f:
            f.write(MANIFEST_TYPE)
        path = os.path.join(d, hexd)
        with open(path, "wb") as f:
            f.write(body)
        t = now - 86400 - rnd.random() * 90 * 86400
        os.utime(path, (t, t))
        total += len(body)
        listed.append(("sha256:" + hexd, len(body)))
        repo = f"bench/repo{i % repos}"
        tagdir = os.path.join(root, "tags", "docker.io", repo, "_tags")
        if tagdir not in made:
            os.makedirs(tagdir, exist_ok=True)
            made.add(tagdir)
        with open(os.path.join(tagdir, f"t{i}"), "w") as f:
            f.write(f"sha256:{hexd}\t{len(body)}\t{int(now * 1000)}\t{MANIFEST_TYPE}\n")
    return real, listed[:5], blobs, manifests, total


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Run:
    """One launch of the mirror on the folder."""

    def __init__(self, work, data, heap, port, max_size=None):
        self.port = port
        cfg = os.path.join(work, "config.yaml")
        with open(cfg, "w") as f:
            f.write(f"server:\n  port: {port}\nstorage:\n  path: {data}\n  minFree: 0\n")
            if max_size:
                f.write(f"  maxSize: {max_size}\n")
            f.write("upstreams:\n  - name: docker.io\n    url: http://127.0.0.1:9\n")
        self.log_path = os.path.join(work, f"mirror-{time.time_ns()}.log")
        self.log = open(self.log_path, "w")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(["java", f"-Xmx{heap}", "-jar", JAR, "--config", cfg],
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def elapsed_ms(self):
        return (time.monotonic() - self.started) * 1000

    def text(self):
        with open(self.log_path) as f:
            return f.read()

    def request(self, method, path, timeout=30):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path)
            r = c.getresponse()
            return r.status, r.read()
        finally:
            c.close()

    def wait_up(self):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                fail("the mirror exited:\n" + self.text()[-3000:])
            try:
                status, _ = self.request("GET", "/v2/", timeout=2)
                if status == 200:
                    return self.elapsed_ms()
            except OSError:
                pass
            time.sleep(0.005)
        fail("/v2/ did not answer within 120 s")

    def wait_log(self, pattern, limit_s=1800):
        deadline = time.monotonic() + limit_s
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.text())
            if m:
                return self.elapsed_ms(), m
            if self.proc.poll() is not None:
                fail("the mirror exited:\n" + self.text()[-3000:])
            time.sleep(0.02)
        fail(f"no log line matching {pattern!r} within {limit_s} s:\n" + self.text()[-3000:])

    def metric(self, name):
        _, body = self.request("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def live_heap_mib(self):
        pid = str(self.proc.pid)
        subprocess.run(["jcmd", pid, "GC.run"], check=True, capture_output=True, timeout=120)
        out = subprocess.run(["jcmd", pid, "GC.heap_info"], check=True, capture_output=True, text=True,
                             timeout=60).stdout
        m = re.search(r"used (\d+)K", out)
        return int(m.group(1)) / 1024 if m else float("nan")

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            fail("the mirror did not stop within 120 s of SIGTERM")
        self.log.close()


class Prober(threading.Thread):
    """HEADs stored blobs over one keep-alive connection, `rate` a second, timing each answer, until stopped."""

    def __init__(self, port, digests, rate):
        super().__init__(daemon=True)
        self.port = port
        self.digests = digests
        self.interval = 1.0 / rate
        self.times = []
        self.failures = 0
        self.done = threading.Event()

    def summary(self):
        t = sorted(self.times)
        if not t:
            return "none"
        p99 = t[min(len(t) - 1, int(len(t) * 0.99))]
        slow = sum(1 for x in t if x > 5)
        return (f"{len(t)}, median {t[len(t) // 2]:.2f} ms, p99 {p99:.2f} ms, max {t[-1]:.2f} ms,"
                f" {slow} over 5 ms")

    def run(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        i = 0
        next_at = time.perf_counter()
        while not self.done.is_set():
            next_at += self.interval
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            d = self.digests[i % len(self.digests)]
            i += 1
            t = time.perf_counter()
            try:
                c.request("HEAD", f"/v2/library/x/blobs/{d}")
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    self.failures += 1
            except OSError:
                self.failures += 1
                c.close()
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                continue
            if i > 20:  # the first few warm up the code path
                self.times.append((time.perf_counter() - t) * 1000)


def measure(label, run, real, manifest, blobs, manifests, expect_log):
    up = run.wait_up()
    d, body = real[0]
    status, got = run.request("GET", f"/v2/library/x/blobs/{d}")
    hit = run.elapsed_ms()
    if status != 200 or got != body:
        fail(f"{label}: stored blob {d} not served ({status})")
    status, _ = run.request("GET", f"/v2/bench/repo0/manifests/{manifest[0]}")
    if status != 200:
        fail(f"{label}: stored manifest {manifest[0]} not served ({status})")
    status, _ = run.request("GET", "/v2/bench/repo0/manifests/t0")  # a tag: one small file, read when asked
    if status != 200:
        fail(f"{label}: stored tag bench/repo0:t0 not served ({status})")
    ready, m = run.wait_log(r"cache index ready: (\d+) blobs, (\d+) manifests, (\d+) bytes, ([^\n]*), in (\d+) ms")
    if expect_log not in m.group(4):
        fail(f"{label}: the index was not {expect_log!r}: {m.group(0)}")
    items_blob = run.metric('registrymirror_stored_items{kind="blob"}')
    items_manifest = run.metric('registrymirror_stored_items{kind="manifest"}')
    return {"label": label, "up": up, "hit": hit, "ready": ready, "how": m.group(4),
            "blobs": items_blob, "manifests": items_manifest, "bytes": int(m.group(3))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", type=int, help="stored items (blobs and manifests)")
    p.add_argument("--heap", default="256m", help="the mirror's -Xmx (default 256m)")
    p.add_argument("--keep", help="build (or reuse) the cache folder here and keep it")
    p.add_argument("--build-only", action="store_true", help="only build the folder (with --keep)")
    p.add_argument("--probe-rate", type=int, default=200,
                   help="lookups a second made during the eviction and the restart (default 200)")
    args = p.parse_args()
    work = tempfile.mkdtemp(prefix="scale-")
    data = os.path.join(args.keep or work, "data")
    try:
        t = time.monotonic()
        meta_file = os.path.join(os.path.dirname(data), "scale-meta.json")
        if args.keep and os.path.exists(meta_file):
            with open(meta_file) as f:
                meta = json.load(f)
            if meta["n"] != args.n:
                fail(f"{data} holds {meta['n']} items, not {args.n}")
            shutil.rmtree(os.path.join(data, "index"), ignore_errors=True)
            real = [(d, bytes.fromhex(b)) for d, b in meta["real"]]
            manifest, blobs, manifests, total = meta["manifest"], meta["blobs"], meta["manifests"], meta["total"]
            print(f"reusing {data}: {blobs} blobs, {manifests} manifests (index removed: a first start)")
        else:
            print(f"building {args.n} items in {data} ...", flush=True)
            real, listed, blobs, manifests, total = build(data, args.n)
            manifest = listed[0]
            with open(meta_file, "w") as f:
                json.dump({"n": args.n, "real": [(d, b.hex()) for d, b in real], "manifest": manifest,
                           "blobs": blobs, "manifests": manifests, "total": total}, f)
            print(f"  built in {time.monotonic() - t:.0f} s: {blobs} blobs, {manifests} manifests and as many"
                  f" tags over {max(1, manifests // 10)} repositories, {total / 2**40:.2f} TiB (sparse)")
        subprocess.run(["sync"])
        if args.build_only:
            return
        results = []
        port = free_port()

        run = Run(work, data, args.heap, port)
        r = measure("first start (no index)", run, real, manifest, blobs, manifests, "reconciled with the disk")
        r["heap"], r["rss"] = run.live_heap_mib(), run.rss_mib()
        run.stop()
        results.append(r)

        run = Run(work, data, args.heap, port)
        r = measure("restart after a clean stop", run, real, manifest, blobs, manifests, "as the last run left it")
        r["heap"], r["rss"] = run.live_heap_mib(), run.rss_mib()
        baseline = Prober(port, [d for d, _ in real], args.probe_rate)
        baseline.start()
        time.sleep(5)  # lookups without an eviction, for comparison
        baseline.done.set()
        baseline.join()
        run.stop()
        results.append(r)
        for r in results:
            if r["blobs"] != blobs or r["manifests"] != manifests or r["bytes"] != total:
                fail(f"{r['label']}: the index holds {r['blobs']} blobs, {r['manifests']} manifests,"
                     f" {r['bytes']} bytes; the folder {blobs}, {manifests}, {total}")

        max_size = max(total // 2, 64 << 20)
        run = Run(work, data, args.heap, port, max_size=max_size)
        run.wait_up()
        prober = Prober(port, [d for d, _ in real], args.probe_rate)
        prober.start()
        _, m = run.wait_log(r"storage upkeep removed (\d+) blobs and manifests \((\d+) MiB\) in (\d+) ms")
        prober.done.set()
        prober.join()
        evicted, millis = int(m.group(1)), int(m.group(3))
        after = run.metric('registrymirror_stored_items{kind="blob"}') + \
            run.metric('registrymirror_stored_items{kind="manifest"}')
        stored_bytes = run.metric('registrymirror_stored_bytes{kind="blob"}') + \
            run.metric('registrymirror_stored_bytes{kind="manifest"}')
        heap, rss = run.live_heap_mib(), run.rss_mib()
        run.stop()
        if after + evicted != blobs + manifests:
            fail(f"eviction: {evicted} evicted and {after} left of {blobs + manifests}")
        if stored_bytes > max_size:
            fail(f"eviction: {stored_bytes} bytes left, over maxSize {max_size}")
        if prober.failures:
            fail(f"{prober.failures} lookups of stored blobs failed during the eviction")
        db = sum(os.path.getsize(os.path.join(data, "index", f)) for f in os.listdir(os.path.join(data, "index"))
                 if f.startswith("index.db"))

        print()
        print(f"{blobs + manifests} stored items ({blobs} blobs, {manifests} manifests), -Xmx{args.heap};"
              f" index database {db / 2**20:.0f} MiB")
        print(f"{'run':<30} {'/v2/':>8} {'hit':>8} {'index':>9} {'live heap':>10} {'RSS':>8}")
        for r in results:
            print(f"{r['label']:<30} {r['up'] / 1000:>7.2f}s {r['hit'] / 1000:>7.2f}s {r['ready'] / 1000:>8.2f}s"
                  f" {r['heap']:>7.0f}MiB {r['rss']:>5.0f}MiB")
        rate = evicted / (millis / 1000) if millis else float("inf")
        print(f"eviction to maxSize {max_size / 2**30:.1f} GiB (half): {evicted} items in {millis / 1000:.1f} s,"
              f" {rate:,.0f} items/s; live heap after {heap:.0f} MiB, RSS {rss:.0f} MiB")
        print(f"lookups (HEAD of a stored blob over HTTP, {args.probe_rate}/s) during the eviction: {prober.summary()}")
        print(f"                                            for 5 s without one: {baseline.summary()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
