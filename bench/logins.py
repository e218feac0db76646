#!/usr/bin/env python3
"""Password checks under a flood of wrong ones, against the jar at -Xmx256m with an htpasswd file
made by `htpasswd -B` (cost 5, its default).

1. From 127.0.0.1: FLOOD concurrent requests with unknown users' Basic credentials.
   Counts how many were checked (401) and how many refused before any hashing (429).
2. Meanwhile, from 127.0.0.2: LOGINS good logins (a different user each, so that none is answered
   from the memory of an earlier success), one after another; prints each one's time.
3. Then, quietly, how long a wrong password takes for a known user and for an unknown one (the
   median of 20 each, every one from its own address so that the throttle does not interfere).

Usage: bench/logins.py [--flood 150] [--logins 5]   (the jar must be built; needs htpasswd)
"""
import argparse
import base64
import concurrent.futures
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JAR = os.path.join(ROOT, "proxy", "target", "registry-mirror.jar")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, user, password, source="127.0.0.1"):
    """Status and seconds of GET /v2/ with Basic credentials, from the address `source`."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(source, 0))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    start = time.monotonic()
    try:
        c.request("GET", "/v2/", headers={"Authorization": "Basic " + token})
        status = c.getresponse().status
    except OSError:
        status = 0
    finally:
        c.close()
    return status, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flood", type=int, default=150)
    ap.add_argument("--logins", type=int, default=5)
    args = ap.parse_args()
    if not os.path.exists(JAR):
        sys.exit(f"no jar at {JAR}: build it first (mvn -B -q -DskipTests package)")
    with tempfile.TemporaryDirectory() as d:
        htpasswd = os.path.join(d, "htpasswd")
        users = [f"user{i}" for i in range(args.logins + 1)]
        for i, u in enumerate(users):
            subprocess.run(["htpasswd", "-B", "-b"] + (["-c"] if i == 0 else []) + [htpasswd, u, "pw-" + u],
                           check=True, capture_output=True)
        port = free_port()
        config = os.path.join(d, "mirror.yaml")
        with open(config, "w") as f:
            f.write(f"server: {{port: {port}, host: 127.0.0.1}}\nstorage: {{path: '{d}/data', minFree: 0}}\n"
                    f"access: {{users: '{htpasswd}'}}\n")
        log = open(os.path.join(d, "mirror.log"), "w")
        mirror = subprocess.Popen(["java", "-Xmx256m", "-jar", JAR, "--config", config], stdout=log,
                                  stderr=subprocess.STDOUT)
        try:
            for _ in range(200):
                try:
                    if get(port, "x", "y")[0] in (401, 429):
                        break
                except OSError:
                    pass
                time.sleep(0.1)  # waiting for another process to listen
            get(port, users[-1], "pw-" + users[-1], "127.0.0.3")  # warms the check path up
            with concurrent.futures.ThreadPoolExecutor(args.flood) as pool:
                flood = [pool.submit(get, port, f"nobody{i}", "wrong") for i in range(args.flood)]
                times = []
                for u in users[:args.logins]:
                    status, seconds = get(port, u, "pw-" + u, "127.0.0.2")
                    times.append((status, seconds))
                statuses = [f.result()[0] for f in flood]
            print(f"flood of {args.flood} wrong logins from one address: "
                  f"{statuses.count(401)} checked (401), {statuses.count(429)} refused before hashing (429), "
                  f"{args.flood - statuses.count(401) - statuses.count(429)} other")
            print("good logins from another address meanwhile: "
                  + ", ".join(f"{s} in {t * 1000:.0f} ms" for s, t in times))
            known = [get(port, users[0], "wrong", f"127.0.1.{i + 1}")[1] for i in range(20)]
            unknown = [get(port, "nobody", "wrong", f"127.0.2.{i + 1}")[1] for i in range(20)]
            print(f"a wrong password, median of 20: known user {statistics.median(known) * 1000:.1f} ms, "
                  f"unknown user {statistics.median(unknown) * 1000:.1f} ms")
        finally:
            mirror.terminate()
            mirror.wait(20)


if __name__ == "__main__":
    main()
