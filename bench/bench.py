#!/usr/bin/env python3
"""The mirror against the reference pull-through cache and the machine's ceiling, in one run.

Starts on loopback: an upstream (CNCF Distribution, Debian's docker-registry) seeded with a test
image, the peer (the same program in proxy mode), the ceiling (nginx serving the same blob file
with sendfile) and the mirror (the jar, -Xmx256m); runs the same workloads against each and prints
a table of medians with ratios, also written into bench/results.md between its markers.

    bench/run.sh            full run (a few minutes; 256 MiB and 1 GiB layers)
    bench/run.sh --smoke    seconds, a tiny blob, one round; checks the script works (CI runs it)
    bench/run.sh --only cold --no-big    one workload (warm, tags, cold, ttfb, memory, startup)
    MIRROR_JAR=/tmp/other.jar bench/run.sh --output /tmp/other.md    another build of the mirror

Blob clients discard bodies in the kernel (recv with MSG_TRUNC), so on a small machine the client
does not take the CPU the servers need; every body's length is checked, and one untimed cold
burst per server checks every byte with sha256. Tag hits use wrk.
"""
import argparse
import concurrent.futures
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# MIRROR_JAR: another build of the mirror, to compare builds side by side in one sitting.
JAR = os.environ.get("MIRROR_JAR") or os.path.join(ROOT, "proxy", "target", "registry-mirror.jar")
REPO = "library/bench"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
WORKLOADS = ("warm", "tags", "single", "cold", "ttfb", "memory", "startup")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.005)  # polling a child's readiness
    raise RuntimeError(f"not up after {seconds} s: {url}")


class Servers:
    """Every process this run started, stopped at the end."""

    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, cmd, **kw):
        log = open(os.path.join(self.work, name + ".log"), "ab")
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self):
        for p in reversed(self.procs):
            self.stop(p)


def registry_config(path, port, storage, proxy_of=None):
    text = f"""version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {storage}
http:
  addr: 127.0.0.1:{port}
  secret: bench-only
"""
    if proxy_of:
        text += f"proxy:\n  remoteurl: {proxy_of}\n"
    with open(path, "w") as f:
        f.write(text)


def make_blob(path, size):
    """A random blob of {size} bytes; returns its digest."""
    h = hashlib.sha256()
    left = size
    with open(path, "wb") as f:
        while left:
            chunk = os.urandom(min(left, 4 << 20))
            h.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    return "sha256:" + h.hexdigest()


def push_blob(base, body, digest):
    """Uploads a blob, given as bytes or a file path, in one request (a monolithic upload)."""
    req = urllib.request.Request(f"{base}/v2/{REPO}/blobs/uploads/", method="POST", data=b"")
    with urllib.request.urlopen(req) as r:
        location = r.headers["Location"]
    if location.startswith("/"):
        location = base + location
    sep = "&" if "?" in location else "?"
    # Without an explicit Content-Type urllib sends a form type, and the registry then misreads the body.
    headers = {"Content-Type": "application/octet-stream"}
    if isinstance(body, bytes):
        data = body
    else:
        headers["Content-Length"] = str(os.path.getsize(body))
        data = open(body, "rb")
    try:
        req = urllib.request.Request(f"{location}{sep}digest={digest}", method="PUT", data=data, headers=headers)
        with urllib.request.urlopen(req) as r:
            assert r.status == 201, r.status
    finally:
        if not isinstance(body, bytes):
            data.close()


def push_image(base, tag, layers):
    """Pushes an OCI image whose layers are the given (path, digest) files; returns the manifest."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    push_blob(base, config, config_digest)
    for path, digest in layers:
        push_blob(base, path, digest)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                    "size": os.path.getsize(p)} for p, d in layers]}).encode()
    urllib.request.urlopen(urllib.request.Request(f"{base}/v2/{REPO}/manifests/{tag}", method="PUT",
                                                  data=manifest,
                                                  headers={"Content-Type": OCI_MANIFEST})).close()
    return manifest


def curl(url, out="/dev/null", accept=None):
    """One GET with curl; returns (bytes, seconds to first byte, total seconds)."""
    cmd = ["curl", "-s", "-f", "-o", out, "-w", "%{size_download} %{time_starttransfer} %{time_total}", url]
    if accept:
        cmd[1:1] = ["-H", "Accept: " + accept]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"curl {url} failed: {r.returncode} {r.stderr}")
    size, ttfb, total = r.stdout.split()
    return int(size), float(ttfb), float(total)


def curl_sha256(url):
    """Streams a GET into sha256sum; returns the digest."""
    p1 = subprocess.Popen(["curl", "-s", "-f", url], stdout=subprocess.PIPE)
    p2 = subprocess.run(["sha256sum"], stdin=p1.stdout, capture_output=True, text=True)
    p1.stdout.close()
    if p1.wait() != 0:
        raise RuntimeError(f"curl {url} failed")
    return "sha256:" + p2.stdout.split()[0]


def parallel(n, fn):
    """Runs fn(i) n times at once; returns (results, wall seconds)."""
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        results = list(pool.map(fn, range(n)))
    return results, time.monotonic() - start


def wrk(url, connections, seconds, header=None, threads=2):
    """Runs wrk; returns requests per second."""
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", url]
    if header:
        cmd[1:1] = ["-H", header]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"wrk {url}: {bad.group(1)} non-2xx answers\n{out}")
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def get_discarding(s, url, sink):
    """One GET on the open socket `s`; the body is discarded in the kernel (recv with MSG_TRUNC: no
    copy to user space), so the client costs little CPU and the server is what is measured.
    Returns (body bytes, seconds to the first byte of the answer, seconds in all); fails on any
    non-200 or short body."""
    u = urllib.parse.urlsplit(url)
    start = time.monotonic()
    s.sendall(f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
    head, first = b"", None
    while b"\r\n\r\n" not in head:
        more = s.recv(4096, socket.MSG_PEEK)
        if not more:
            raise RuntimeError(f"{url}: connection closed")
        first = first or time.monotonic()
        cut = (head + more).find(b"\r\n\r\n")
        head += s.recv(len(more) if cut < 0 else cut + 4 - len(head))
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"{url}: status {status.decode()}")
    size = left = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while left:
        n = s.recv_into(sink, min(left, len(sink)), socket.MSG_TRUNC)
        if n == 0:
            raise RuntimeError(f"{url}: body cut short")
        left -= n
    return size, first - start, time.monotonic() - start


def fetch(url):
    """One GET on a new connection, body discarded: (bytes, seconds to first byte, seconds in all)."""
    u = urllib.parse.urlsplit(url)
    with socket.create_connection((u.hostname, u.port)) as s:
        return get_discarding(s, url, bytearray(1 << 22))


def drain_one(url, seconds):
    """GETs url over one keep-alive connection for `seconds`; returns body bytes received."""
    u = urllib.parse.urlsplit(url)
    total, deadline, sink = 0, time.monotonic() + seconds, bytearray(1 << 22)
    with socket.create_connection((u.hostname, u.port)) as s:
        while time.monotonic() < deadline:
            total += get_discarding(s, url, sink)[0]
    return total


def drain(url, clients, seconds):
    """`clients` processes running drain_one at once; returns bytes per second."""
    start = time.monotonic()
    with concurrent.futures.ProcessPoolExecutor(clients) as pool:
        total = sum(pool.map(drain_one, [url] * clients, [seconds] * clients))
    return total / (time.monotonic() - start)


def vm_hwm(pid):
    """Peak resident size of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def upstream_gets(log_path, digest):
    """GETs of a blob that the upstream answered with 200, from its access log."""
    with open(log_path, errors="replace") as f:
        return sum(1 for line in f if f'"GET /v2/{REPO}/blobs/{digest} ' in line and '" 200 ' in line)


class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.work = tempfile.mkdtemp(prefix="registry-mirror-bench-")
        self.servers = Servers(self.work)
        self.rounds = 1 if self.smoke else args.rounds
        self.rows = []
        self.notes = []
        self.peer_errors = []

    # ------------------------------------------------------------------ set-up

    def setup(self):
        w = self.work
        size = (1 << 20) if self.smoke else (256 << 20)
        print(f"work folder {w}; generating layers", flush=True)
        self.blob = os.path.join(w, "layer.bin")
        self.digest = make_blob(self.blob, size)
        self.size = size
        # Pulled cold through each freshly started server before a cold measurement: a mirror runs for
        # months, so its compiled code is warm; the measurement is of a blob not in the cache.
        self.warmup_blob = os.path.join(w, "warmup.bin")
        self.warmup_digest = make_blob(self.warmup_blob, size // 4)
        # For time to first byte: blobs each server gets once (cold), and a few hundred small ones pulled
        # cold through it first, so its code for a cold pull is compiled, as in a mirror that has run for
        # a while. A freshly started process is measured too (the first cold pull after the start).
        self.ttfb_blobs = []
        for i in range((2 if self.smoke else 10) * self.rounds):
            path = os.path.join(w, f"ttfb-{i}.bin")
            self.ttfb_blobs.append((path, make_blob(path, (256 << 10) if self.smoke else (8 << 20))))
        self.small_blobs = [os.urandom(4096) for _ in range(20 if self.smoke else 300)]
        # For the single cold pull: per round, one blob the bench's client pulls and one curl pulls, each
        # cold through the mirror, the peer and straight from the upstream; and blobs of a quarter the
        # size that each server pulls cold first, as a mirror that has been running has.
        self.single_blobs = []
        for i in range(3 * self.rounds):
            path = os.path.join(w, f"single-{i}.bin")
            self.single_blobs.append((path, make_blob(path, size)))
        # 32 of them: after 16, the mirror's JIT compiler still took 0.18 CPU-s per cold pull of 256 MiB
        # (measured per thread), after 40 it took 0.02 s.
        self.single_warmup = []
        for i in range(2 if self.smoke else 32):
            path = os.path.join(w, f"single-warmup-{i}.bin")
            self.single_warmup.append((path, make_blob(path, size // 8)))
        self.big = None
        if not self.smoke and not self.args.no_big:
            self.big = os.path.join(w, "big.bin")
            self.big_digest = make_blob(self.big, 1 << 30)

        self.up_port = free_port()
        registry_config(f"{w}/upstream.yml", self.up_port, f"{w}/upstream-storage")
        self.upstream = self.servers.start("upstream", ["docker-registry", "serve", f"{w}/upstream.yml"])
        self.up = f"http://127.0.0.1:{self.up_port}"
        wait_up(self.up + "/v2/", self.upstream)
        layers = [(self.blob, self.digest), (self.warmup_blob, self.warmup_digest)] + (
            [(self.big, self.big_digest)] if self.big else [])
        self.manifest = push_image(self.up, "latest", layers)
        self.manifest_digest = "sha256:" + hashlib.sha256(self.manifest).hexdigest()
        for path, digest in self.ttfb_blobs + self.single_blobs + self.single_warmup:
            push_blob(self.up, path, digest)
            os.unlink(path)
        self.small_digests = []
        for body in self.small_blobs:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
            push_blob(self.up, body, digest)
            self.small_digests.append(digest)

        # The ceiling: nginx serving the same bytes as static files, with sendfile.
        self.nginx_port = free_port()
        www = os.path.join(w, "www")
        os.makedirs(www)
        os.link(self.blob, os.path.join(www, "blob"))
        if self.big:
            os.link(self.big, os.path.join(www, "big"))
        with open(os.path.join(www, "manifest"), "wb") as f:
            f.write(self.manifest)
        os.chmod(w, 0o755)
        for name in os.listdir(www):
            os.chmod(os.path.join(www, name), 0o644)
        with open(f"{w}/nginx.conf", "w") as f:
            f.write(f"""daemon off;
worker_processes auto;
pid {w}/nginx.pid;
error_log {w}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  sendfile on;
  tcp_nopush on;
  access_log off;
  keepalive_requests 100000;
  server {{
    listen 127.0.0.1:{self.nginx_port};
    root {www};
    types {{ }}
    default_type application/octet-stream;
  }}
}}
""")
        self.nginx = self.servers.start("nginx", ["nginx", "-c", f"{w}/nginx.conf", "-p", w])
        wait_up(f"http://127.0.0.1:{self.nginx_port}/manifest", self.nginx)

    def upstream_log_settled(self):
        """Waits until the upstream has logged a request made now, so earlier ones are logged too."""
        mark = os.urandom(8).hex()
        curl(f"{self.up}/v2/?mark={mark}")
        log = f"{self.work}/upstream.log"
        deadline = time.monotonic() + 10
        while mark not in open(log, errors="replace").read():
            if time.monotonic() > deadline:
                raise RuntimeError("the upstream did not log a request")
            time.sleep(0.01)  # polling the upstream's log

    def start_peer(self, name):
        port = free_port()
        storage = os.path.join(self.work, name + "-storage")
        shutil.rmtree(storage, ignore_errors=True)
        registry_config(f"{self.work}/{name}.yml", port, storage, proxy_of=self.up)
        p = self.servers.start(name, ["docker-registry", "serve", f"{self.work}/{name}.yml"])
        wait_up(f"http://127.0.0.1:{port}/v2/", p)
        return p, f"http://127.0.0.1:{port}"

    def start_mirror(self, name):
        port = free_port()
        storage = os.path.join(self.work, name + "-storage")
        shutil.rmtree(storage, ignore_errors=True)
        start = time.monotonic()
        # storage.minFree off: its default (1 GiB) would make the run depend on this machine's free disk.
        config = os.path.join(self.work, name + ".yaml")
        with open(config, "w") as f:
            f.write("storage: {minFree: 0}\n")
        p = self.servers.start(name, ["java", "-Xmx256m", *self.args.java_opt, "-jar", JAR, "--config", config,
                                      "--port", str(port), "--storage", storage, "--upstream", self.up])
        wait_up(f"http://127.0.0.1:{port}/v2/", p)
        return p, f"http://127.0.0.1:{port}", time.monotonic() - start

    def blob_url(self, base, digest=None):
        return f"{base}/v2/{REPO}/blobs/{digest or self.digest}"

    # ------------------------------------------------------------------ workloads

    def row(self, name, unit, mirror, peer, ceiling, target, ok):
        self.rows.append((name, unit, mirror, peer, ceiling, target, ok))
        print(f"{name}: mirror {fmt(mirror)} {unit}, peer {fmt(peer)}, ceiling {fmt(ceiling)} -> "
              f"{'OK' if ok else 'MISSED'} ({target})", flush=True)

    def warm_throughput(self, mirror, peer):
        seconds = 1 if self.smoke else 8
        curl(self.blob_url(mirror))
        curl(self.blob_url(peer))
        results = {}
        for name, url in (("mirror", self.blob_url(mirror)), ("peer", self.blob_url(peer)),
                          ("ceiling", f"http://127.0.0.1:{self.nginx_port}/blob")):
            results[name] = statistics.median(drain(url, 8, seconds) for _ in range(self.rounds)) / (1 << 20)
        m, p, c = results["mirror"], results["peer"], results["ceiling"]
        self.row("1. warm blob, 8 clients", "MiB/s", m, p, c, "≥ 0.9× ceiling and > peer",
                 m >= 0.9 * c and m > p)

    def tag_hits(self, mirror, peer):
        seconds = 1 if self.smoke else 5
        accept = "Accept: " + OCI_MANIFEST
        curl(f"{mirror}/v2/{REPO}/manifests/latest", accept=OCI_MANIFEST)
        curl(f"{peer}/v2/{REPO}/manifests/latest", accept=OCI_MANIFEST)
        results = {}
        for name, url, header in (("mirror", f"{mirror}/v2/{REPO}/manifests/latest", accept),
                                  ("peer", f"{peer}/v2/{REPO}/manifests/latest", accept),
                                  ("ceiling", f"http://127.0.0.1:{self.nginx_port}/manifest", None)):
            results[name] = statistics.median(wrk(url, 32, seconds, header) for _ in range(self.rounds))
        m, p, c = results["mirror"], results["peer"], results["ceiling"]
        self.row("2. tag-manifest hits, wrk 32 conns", "req/s", m, p, c, "≥ 0.9× ceiling", m >= 0.9 * c)

    def single(self):
        """One client pulling a blob no server has: through the mirror, through the peer, and straight from
        the upstream, in turn (the order turns each round), each server started once and warmed up by cold
        pulls first. Each blob is pulled once through each, by the bench's client (which discards bytes
        in the kernel) or by curl writing to /dev/null (which copies them, as a real client does). The
        page cache is flushed (sync) before each pull, so no pull pays for the previous one's writes."""
        mirror, mirror_url, _ = self.start_mirror("mirror-single")
        peer, peer_url = self.start_peer("peer-single")
        targets = {"mirror": mirror_url, "peer": peer_url, "direct": self.up}
        for name in ("mirror", "peer"):
            self.warm_up(targets[name], tolerate=name == "peer")
            for _, digest in self.single_warmup:
                fetch(self.blob_url(targets[name], digest))
        times = {(client, name): [] for client in ("bench", "curl", "primed") for name in targets}
        order = list(targets)
        for r in range(self.rounds):
            for client, (_, digest) in (("bench", self.single_blobs[3 * r]), ("curl", self.single_blobs[3 * r + 1]),
                                        ("primed", self.single_blobs[3 * r + 2])):
                for name in order:
                    os.sync()
                    if client == "primed":
                        self.prime_page_cache()
                    url = self.blob_url(targets[name], digest)
                    if client != "curl":
                        size, _, took = fetch(url)
                    else:
                        size, _, took = curl(url)
                    assert size == self.size, (name, client, size)
                    times[(client, name)].append(took)
            order = order[1:] + order[:1]
        self.servers.stop(mirror)
        self.servers.stop(peer)
        med = {k: statistics.median(v) for k, v in times.items()}
        for client, label in (("bench", "3a. single cold pull, bench client"), ("curl", "3b. single cold pull, curl")):
            m, p, d = med[(client, "mirror")], med[(client, "peer")], med[(client, "direct")]
            self.row(label, "s", m, p, d,
                     "≤ peer and ≤ 2× direct (ceiling column: straight from the upstream)", m <= p and m <= 2 * d)
        pm, pp, pd = (med[("primed", n)] for n in ("mirror", "peer", "direct"))
        self.notes.append(f"Single cold pull with memory freed just before (a file of twice the blob written "
                          f"and deleted), which takes this VM's cost of first touching memory out of the file "
                          f"writes: mirror {pm:.2f} s, peer {pp:.2f} s, direct {pd:.2f} s (bench client, medians).")
        self.notes.append("Single cold pulls of the " + f"{self.size >> 20} MiB blob, round by round (mirror / peer / direct): "
                          + "; ".join(f"{client}: " + ", ".join(
                              f"{times[(client, 'mirror')][i]:.2f}/{times[(client, 'peer')][i]:.2f}/"
                              f"{times[(client, 'direct')][i]:.2f}" for i in range(self.rounds))
                                      for client in ("bench", "curl", "primed")) + " s.")

    def prime_page_cache(self):
        """Writes and deletes a file of twice the blob's size. On a VM that hands free memory back to its
        host (virtio-balloon free page reporting, as here), a page cache page first touched costs about
        ten times one that was freed moments before (measured: 2.4 s of system time per GiB written against
        0.18 s); memory freed now makes the next pull's file writes cost what they cost on a machine of
        its own."""
        path = os.path.join(self.work, "primer")
        block = bytes(1 << 20)
        with open(path, "wb") as f:
            for _ in range(2 * max(1, self.size >> 20)):
                f.write(block)
        os.unlink(path)

    def cold(self, make, label):
        """Single cold pull, cold burst of 16, TTFB; a fresh server (empty storage) for each."""
        singles, bursts, ttfbs, fetches, hwm, cached = [], [], [], [], 0, []
        for _ in range(self.rounds):
            p, base, *_ = make(label)
            self.warm_up(base, tolerate=label == "peer")
            size, ttfb, total = fetch(self.blob_url(base))
            assert size == self.size
            singles.append(total)
            ttfbs.append(ttfb)
            self.servers.stop(p)
            before = upstream_gets(f"{self.work}/upstream.log", self.digest)
            p, base, *_ = make(label)
            self.warm_up(base, tolerate=label == "peer")
            bursts.append(self.burst(self.blob_url(base), f"{label}, cold burst", tolerate=label == "peer"))
            self.upstream_log_settled()
            fetches.append(upstream_gets(f"{self.work}/upstream.log", self.digest) - before)
            if label == "mirror":
                hwm = max(hwm, vm_hwm(p.pid))
                # The same 16 clients again, the blob now cached: what sending 16 copies costs on its own.
                # (Not asked of the peer: right after 16 concurrent fetches of one blob, Distribution's proxy
                # sometimes answers 500 while its copies settle.)
                cached.append(self.burst(self.blob_url(base), f"{label}, cached burst"))
            self.servers.stop(p)
        # Untimed (hashing 16 copies would swamp the timing on a small machine): every client of a
        # cold burst gets exactly the blob.
        p, base, *_ = make(label)
        digests, _ = self.concurrently(16, lambda i: curl_sha256(self.blob_url(base)),
                                       f"{label}, checked cold burst", tolerate=label == "peer")
        if any(d != self.digest for d in digests):
            raise RuntimeError(f"{label}: a client of the cold burst got wrong bytes")
        self.servers.stop(p)
        return (statistics.median(singles), statistics.median(bursts), statistics.median(ttfbs), max(fetches), hwm,
                statistics.median(cached) if cached else None)

    def concurrently(self, n, fn, what, tolerate=False):
        """Runs fn(i) n times at once; returns (results, wall seconds), as parallel does. With tolerate
        (the peer), a call that fails with an error answer is left out of the results and noted instead of
        failing the run: Distribution's proxy sometimes answers 500 to concurrent cold fetches of one
        blob, and that is its result."""
        def one(i):
            try:
                return fn(i)
            except (RuntimeError, OSError) as e:
                if not tolerate:
                    raise
                return e
        results, wall = parallel(n, one)
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            self.peer_errors.append(f"{what}: {len(errors)} of {n} clients got an error ({errors[0]})")
        return [r for r in results if not isinstance(r, Exception)], wall

    def burst(self, url, what, tolerate=False):
        """16 clients GET url at once, each reading the whole blob; returns the wall time (errors: see
        concurrently)."""
        sizes, wall = self.concurrently(16, lambda i: fetch(url)[0], what, tolerate)
        if any(n != self.size for n in sizes):
            raise RuntimeError(f"{what}: the clients got {sizes} bytes")
        return wall

    def warm_up(self, base, tolerate=False):
        """Requests that exercise a freshly started server (manifests, the config blob, a cold pull of the
        warm-up blob), so that a cold-blob measurement times the blob path, not a process just started."""
        for _ in range(20):
            curl(f"{base}/v2/{REPO}/manifests/latest", accept=OCI_MANIFEST)
        config = json.loads(self.manifest)["config"]["digest"]
        for _ in range(20):
            curl(self.blob_url(base, config))
        self.concurrently(4, lambda i: curl(self.blob_url(base, self.warmup_digest)),
                          "warm-up, 4 concurrent cold pulls", tolerate)
        for _ in range(3):
            try:
                curl(self.blob_url(base, self.warmup_digest))
            except RuntimeError as e:
                if not tolerate:
                    raise
                # Distribution's proxy may still answer 500 right after concurrent cold fetches: its result.
                self.peer_errors.append(f"warm-up, a pull after the concurrent ones: {e}")

    def cold_runs(self):
        m_single, m_burst, m_ttfb, m_fetches, m_hwm, m_cached = self.cold(lambda n: self.start_mirror(n), "mirror")
        p_single, p_burst, p_ttfb, p_fetches, _, _ = self.cold(lambda n: self.start_peer(n), "peer")
        nginx = f"http://127.0.0.1:{self.nginx_port}/blob"
        c_burst = statistics.median(self.burst(nginx, "nginx burst") for _ in range(self.rounds))
        up_ttfb = statistics.median(fetch(self.blob_url(self.up))[1] for _ in range(max(3, self.rounds)))
        self.row("3c. cold burst, 16 clients: upstream fetches", "fetches", m_fetches, p_fetches, None,
                 "exactly 1", m_fetches == 1)
        self.row("3d. cold burst wall time / the same burst warm", "×", m_burst / m_cached, None, None,
                 "≤ 1.3×", m_burst <= 1.3 * m_cached)
        self.notes.append(f"Cold pull of the {self.size >> 20} MiB blob: mirror {m_single:.2f} s alone, "
                          f"{m_burst:.2f} s for 16 at once; peer {p_single:.2f} s and {p_burst:.2f} s. "
                          f"The same 16 clients once the blob is cached: mirror {m_cached:.2f} s, "
                          f"nginx {c_burst:.2f} s, {c_burst / m_single:.1f}× the mirror's single cold pull"
                          + (": on this machine, sending the 16 copies alone takes longer than the target allows for "
                             "the whole cold burst." if c_burst > 1.3 * m_single else "."))
        self.notes.append(f"Time to first byte of the first cold pull after a start (a process started "
                          f"seconds before): mirror {m_ttfb * 1000:.1f} ms, peer {p_ttfb * 1000:.1f} ms, "
                          f"upstream {up_ttfb * 1000:.1f} ms.")
        self.burst_hwm = m_hwm

    def ttfb(self):
        """Time to first byte of cold blobs. Each round starts the mirror, pulls a few hundred small blobs
        cold through it (its code for a cold pull is then compiled, as in a mirror that has run for a
        while), then asks the upstream and the mirror in turn for each of a set of blobs; then the same
        for the peer, alone with the upstream, on the same blobs (cold for it too)."""
        up, m, p = [], [], []
        per_round = len(self.ttfb_blobs) // self.rounds
        for r in range(self.rounds):
            blobs = [d for _, d in self.ttfb_blobs[r * per_round:(r + 1) * per_round]]
            for label, start, times in (("mirror", lambda n: self.start_mirror(n)[:2], m),
                                        ("peer", self.start_peer, p)):
                proc, base = start(f"{label}-ttfb-{r}")
                self.warm_up(base, tolerate=label == "peer")
                for digest in self.small_digests:
                    size = fetch(self.blob_url(base, digest))[0]
                    assert size == 4096, size
                for digest in blobs:
                    if label == "mirror":
                        fetch(self.blob_url(self.up, digest))  # untimed: the upstream has read the blob once
                        up.append(fetch(self.blob_url(self.up, digest))[1] * 1000)
                    times.append(fetch(self.blob_url(base, digest))[1] * 1000)
                self.servers.stop(proc)
        mu, pu, uu = statistics.median(m), statistics.median(p), statistics.median(up)
        self.row("4. cold time to first byte", "ms", mu, pu, uu,
                 "≤ upstream + 2 ms (ceiling column: the upstream itself)", mu <= uu + 2)
        self.notes.append(f"Time to first byte of {len(m)} cold blobs, after {len(self.small_digests)} cold pulls "
                          f"through each server: mirror {min(m):.1f}–{max(m):.1f} ms, peer {min(p):.1f}–{max(p):.1f} ms, "
                          f"upstream {min(up):.1f}–{max(up):.1f} ms; the mirror minus the upstream, blob by blob: "
                          f"median {statistics.median(a - b for a, b in zip(m, up)):.1f} ms.")

    def memory(self):
        p, base, _ = self.start_mirror("mirror-memory")
        curl(self.blob_url(base))
        n = 8 if self.smoke else 64
        parallel(n, lambda i: curl(self.blob_url(base)))
        warm = vm_hwm(p.pid)
        self.servers.stop(p)
        big_warm = big_cold = None
        if self.big:
            p, base, _ = self.start_mirror("mirror-big")
            parallel(16, lambda i: curl(self.blob_url(base, self.big_digest)))  # cold burst of the 1 GiB blob
            big_cold = vm_hwm(p.pid)
            parallel(64, lambda i: curl(self.blob_url(base, self.big_digest)))
            big_warm = vm_hwm(p.pid)
            self.servers.stop(p)
        mib = 1 << 20
        worst = max(x for x in (warm, getattr(self, "burst_hwm", None), big_warm, big_cold) if x)
        self.row(f"5. peak RSS, {n} warm pulls / cold burst (-Xmx256m)", "MiB", warm / mib,
                 None, None, "≤ 300 MiB (the 1 GiB layer included)", worst <= 300 * mib)
        self.notes.append(f"Peak RSS of the mirror: {warm / mib:.0f} MiB during {n} warm pulls and "
                          f"{getattr(self, 'burst_hwm', 0) / mib:.0f} MiB during the cold burst of the {self.size >> 20} MiB blob"
                          + (f"; with the 1 GiB blob, {big_cold / mib:.0f} MiB during a cold burst of 16 and "
                             f"{big_warm / mib:.0f} MiB after 64 warm pulls" if self.big else "") + ".")

    def startup(self):
        times = []
        for i in range(3 if self.smoke else 7):
            p, _, took = self.start_mirror(f"mirror-start-{i}")
            times.append(took)
            self.servers.stop(p)
        m = statistics.median(times)
        self.row("6. start-up to first 200 on /v2/", "s", m, None, None, "< 1.5 s", m < 1.5)

    # ------------------------------------------------------------------ report

    def report(self):
        lines = ["| workload | unit | mirror | peer | ceiling | mirror/ceiling | mirror/peer | target | met |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for name, unit, m, p, c, target, ok in self.rows:
            lines.append(f"| {name} | {unit} | {fmt(m)} | {fmt(p)} | {fmt(c)} | {ratio(m, c)} | {ratio(m, p)} | "
                         f"{target} | {'yes' if ok else '**no**'} |")
        cpu = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
        header = (f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {cpu} cores, "
                  f"{'smoke mode' if self.smoke else f'medians of {self.rounds} rounds'}; "
                  f"blob {self.size >> 20} MiB. Peer: Distribution "
                  f"{version(['docker-registry', '--version'])} in proxy mode; ceiling: nginx "
                  f"{version(['nginx', '-v'])} with sendfile.")
        text = "\n".join([header, "", *lines, "", *("- " + n for n in self.notes)]) + "\n"
        print("\n" + text)
        target = self.args.output
        if target:
            write_between_markers(target, text)
            print(f"written to {target}")
        return all(ok for *_, ok in self.rows)

    def run(self):
        try:
            self.setup()
            only = set(self.args.only or WORKLOADS)
            if only & {"warm", "tags"}:
                mirror, mirror_url, _ = self.start_mirror("mirror")
                peer, peer_url = self.start_peer("peer")
                if "warm" in only:
                    self.warm_throughput(mirror_url, peer_url)
                if "tags" in only:
                    self.tag_hits(mirror_url, peer_url)
                self.servers.stop(mirror)
                self.servers.stop(peer)
            if "single" in only:
                self.single()
            if "cold" in only:
                self.cold_runs()
            if "ttfb" in only:
                self.ttfb()
            if "memory" in only:
                self.memory()
            if "startup" in only:
                self.startup()
            if self.peer_errors:
                self.notes.append("The peer answered some concurrent cold fetches with an error: "
                                  + "; ".join(self.peer_errors) + ".")
            return self.report()
        except Exception:
            # What the servers said last, so that a failed run can be understood after its folder is gone.
            for name in sorted(os.listdir(self.work)):
                if name.startswith("mirror") and name.endswith(".log"):
                    with open(os.path.join(self.work, name), "rb") as f:
                        tail = f.read()[-3000:].decode("utf-8", "replace")
                    print(f"--- the end of {name}:\n{tail}", file=sys.stderr)
            raise
        finally:
            self.servers.stop_all()
            if not self.args.keep:
                shutil.rmtree(self.work, ignore_errors=True)


def fmt(x):
    if x is None:
        return "–"
    if isinstance(x, int):
        return str(x)
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.2f}"


def ratio(a, b):
    return "–" if a is None or not b else f"{a / b:.2f}×"


def version(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"(\d+\.\d+(\.\d+)?)", r.stdout + r.stderr)
    return m.group(1) if m else "?"


def write_between_markers(path, text):
    begin, end = "<!-- results:begin -->", "<!-- results:end -->"
    old = open(path).read() if os.path.exists(path) else f"# Benchmark results\n\n{begin}\n{end}\n"
    if begin not in old:
        old += f"\n{begin}\n{end}\n"
    head, rest = old.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{begin}\n{text}{end}{tail}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="seconds, a tiny blob, one round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per measurement (full run)")
    ap.add_argument("--no-big", action="store_true", help="skip the 1 GiB blob")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, storage)")
    ap.add_argument("--output", default=None, help="results file (default: bench/results.md, none in smoke mode)")
    ap.add_argument("--only", action="append", choices=WORKLOADS,
                    help="run only this workload (repeatable); results.md is then left alone")
    ap.add_argument("--java-opt", action="append", default=[], metavar="OPT",
                    help="an extra JVM option for the mirror, e.g. -XX:StartFlightRecording=... (repeatable)")
    args = ap.parse_args()
    if args.output is None and not args.smoke and not args.only:
        args.output = os.path.join(ROOT, "bench", "results.md")
    if not os.path.exists(JAR):
        sys.exit(f"no jar at {JAR}: build it first (mvn -B -q -DskipTests package)")
    met = Bench(args).run()
    if args.smoke:
        print("smoke run finished (targets are not judged in smoke mode)")
        return 0
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
