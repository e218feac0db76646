#!/usr/bin/env python3
"""Pushes to the mirror's hosted repositories against pushes to CNCF Distribution 2.8 (the plain
registry of the classic recipe), side by side in one run on loopback, with curl as the client.

For each server, N rounds (a fresh blob each, so nothing is skipped as already there) of:
  - a monolithic upload of one blob (POST ?digest= with the body),
  - the same size in 16 MiB chunks (POST, PATCH with Content-Range, PUT ?digest=),
  - a manifest naming it (PUT),
  - the blob pulled back (GET, curl writing to /dev/null), then by 8 clients at once,
then the peak RSS of the mirror (-Xmx256m). Medians are printed as a Markdown table.

    bench/push.py              256 MiB blobs, 3 rounds
    bench/push.py --smoke      1 MiB, one round (checks the script works)
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402

CHUNK = 16 << 20


def curl(*args):
    """The answer's head (and, when it is an error, its body after it)."""
    r = subprocess.run(["curl", "-s", "-S", "-D", "-", *args], capture_output=True, text=True, check=True)
    return r.stdout


def pull(url):
    """GETs url into /dev/null; fails unless 200."""
    r = subprocess.run(["curl", "-s", "-S", "-o", "/dev/null", "-w", "%{http_code}", url], capture_output=True,
                       text=True, check=True)
    assert r.stdout == "200", (url, r.stdout)


def header(head, name):
    for line in reversed(head.splitlines()):
        if line.lower().startswith(name.lower() + ":"):
            return line.split(":", 1)[1].strip()
    return None


def status(head):
    """The final status: after any interim 100 Continue."""
    return int([line for line in head.splitlines() if line.startswith("HTTP/")][-1].split()[1])


def monolithic(base, repo, path, digest):
    t = time.monotonic()
    head = curl("-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + path,
                f"{base}/v2/{repo}/blobs/uploads/?digest={digest}")
    took = time.monotonic() - t
    if status(head) == 202:  # a registry that wants the body in a PUT (Distribution 2.8 does)
        t = time.monotonic()
        head = curl("-X", "POST", f"{base}/v2/{repo}/blobs/uploads/")
        loc = header(head, "Location")
        loc = loc if loc.startswith("http") else base + loc
        head = curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", "@" + path,
                    loc + ("&" if "?" in loc else "?") + "digest=" + digest)
        took = time.monotonic() - t
    assert status(head) == 201, head
    return took


def chunked(base, repo, path, digest, size):
    t = time.monotonic()
    head = curl("-X", "POST", f"{base}/v2/{repo}/blobs/uploads/")
    loc = header(head, "Location")
    offset = 0
    with open(path, "rb") as f:
        while offset < size:
            n = min(CHUNK, size - offset)
            part = path + ".part"
            with open(part, "wb") as out:
                out.write(f.read(n))
            url = loc if loc.startswith("http") else base + loc
            head = curl("-X", "PATCH", "-H", "Content-Type: application/octet-stream", "-H",
                        f"Content-Range: {offset}-{offset + n - 1}", "--data-binary", "@" + part, url)
            assert status(head) == 202, head
            loc = header(head, "Location")
            offset += n
    url = loc if loc.startswith("http") else base + loc
    head = curl("-X", "PUT", url + ("&" if "?" in url else "?") + "digest=" + digest)
    assert status(head) == 201, head
    return time.monotonic() - t


def manifest(base, repo, tag, digest, size):
    config = b'{"architecture":"amd64","os":"linux"}'
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    head = curl("-X", "POST", "-H", "Content-Type: application/octet-stream", "--data-binary", config.decode(),
                f"{base}/v2/{repo}/blobs/uploads/?digest={cd}")
    if status(head) == 202:
        loc = header(head, "Location")
        loc = loc if loc.startswith("http") else base + loc
        head = curl("-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary", config.decode(),
                    loc + ("&" if "?" in loc else "?") + "digest=" + cd)
    assert status(head) == 201, head
    body = json.dumps({"schemaVersion": 2, "mediaType": bench.OCI_MANIFEST,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                  "size": len(config)},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                                   "size": size}]})
    t = time.monotonic()
    head = curl("-X", "PUT", "-H", "Content-Type: " + bench.OCI_MANIFEST, "--data-binary", body,
                f"{base}/v2/{repo}/manifests/{tag}")
    assert status(head) == 201, head
    return time.monotonic() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    size = (1 << 20) if args.smoke else (256 << 20)
    rounds = 1 if args.smoke else args.rounds
    w = tempfile.mkdtemp(prefix="push-bench-")
    servers = bench.Servers(w)
    try:
        reg_port = bench.free_port()
        bench.registry_config(f"{w}/reg.yml", reg_port, f"{w}/reg")
        reg = servers.start("registry", ["docker-registry", "serve", f"{w}/reg.yml"])
        reg_url = f"http://127.0.0.1:{reg_port}"
        bench.wait_up(reg_url + "/v2/", reg)
        port = bench.free_port()
        with open(f"{w}/mirror.yaml", "w") as f:
            f.write("storage: {minFree: 0}\nhosted: {repositories: [\"team/**\"]}\naccess:\n  rules:\n"
                    "    - {repositories: [\"team/**\"], pull: [anonymous], push: [anonymous]}\n"
                    "    - {repositories: [\"**\"], pull: [anonymous]}\n")
        mirror = servers.start("mirror", ["java", "-Xmx256m", "-jar", bench.JAR, "--config", f"{w}/mirror.yaml",
                                          "--port", str(port), "--storage", f"{w}/mirror"])
        mirror_url = f"http://127.0.0.1:{port}"
        bench.wait_up(mirror_url + "/v2/", mirror)
        results = {"mirror": {"mono": [], "chunked": [], "manifest": [], "pull": [], "pull8": []},
                   "registry": {"mono": [], "chunked": [], "manifest": [], "pull": [], "pull8": []}}
        for r in range(rounds):
            for name, base in (("mirror", mirror_url), ("registry", reg_url)) if r % 2 == 0 else \
                    (("registry", reg_url), ("mirror", mirror_url)):
                for kind in ("mono", "chunked"):
                    path = f"{w}/blob-{name}-{r}-{kind}.bin"
                    digest = bench.make_blob(path, size)
                    os.sync()
                    took = monolithic(base, "team/app", path, digest) if kind == "mono" \
                        else chunked(base, "team/app", path, digest, size)
                    results[name][kind].append(took)
                    if kind == "mono":
                        results[name]["manifest"].append(manifest(base, "team/app", f"r{r}", digest, size))
                        url = f"{base}/v2/team/app/blobs/{digest}"
                        t = time.monotonic()
                        pull(url)
                        results[name]["pull"].append(time.monotonic() - t)
                        t = time.monotonic()
                        bench.parallel(8, lambda i: pull(url))
                        results[name]["pull8"].append(time.monotonic() - t)
                    os.unlink(path)
        hwm = bench.vm_hwm(mirror.pid)
        mib = size >> 20
        print(f"Pushes of {mib} MiB blobs on loopback, curl as the client, medians of {rounds} rounds, "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {os.cpu_count()} cores:\n")
        print("| push | mirror (hosted) | Distribution 2.8 |")
        print("|---|---|---|")
        for kind, label in (("mono", f"one blob of {mib} MiB, monolithic"),
                            ("chunked", f"one blob of {mib} MiB in {CHUNK >> 20} MiB chunks"),
                            ("manifest", "its manifest"),
                            ("pull", f"the {mib} MiB blob pulled back"),
                            ("pull8", f"the {mib} MiB blob pulled back by 8 clients at once")):
            m, g = statistics.median(results["mirror"][kind]), statistics.median(results["registry"][kind])
            unit = "ms" if kind == "manifest" else "s"
            f = (lambda x: f"{x * 1000:.1f} ms") if unit == "ms" else (lambda x: f"{x:.2f} s")
            print(f"| {label} | {f(m)} | {f(g)} |")
        print(f"\nPeak RSS of the mirror (-Xmx256m): {hwm >> 20} MiB.")
    finally:
        servers.stop_all()
        import shutil
        shutil.rmtree(w, ignore_errors=True)


if __name__ == "__main__":
    main()
