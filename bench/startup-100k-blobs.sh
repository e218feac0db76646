#!/usr/bin/env bash
# Start-up time of the mirror with 100,000 blobs already stored: how long until /v2/ answers, until
# a stored blob is served, and until the background scan has indexed everything.
# Usage: bench/startup-100k-blobs.sh [count]   (builds the jar first if it is missing)
# DROP_CACHES=1 (as root) empties the page cache first, for a cold start.
set -euo pipefail
cd "$(dirname "$0")/.."
count="${1:-100000}"
jar=proxy/target/registry-mirror.jar
[ -f "$jar" ] || mvn -B -q -ntp -DskipTests package
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

python3 - "$work/data" "$count" <<'PY'
import hashlib, os, sys
root, count = sys.argv[1], int(sys.argv[2])
first = None
for i in range(count):
    body = os.urandom(512) + i.to_bytes(8, "big")
    hexd = hashlib.sha256(body).hexdigest()
    d = os.path.join(root, "blobs", "sha256", hexd[:2])
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hexd), "wb") as f:
        f.write(body)
    first = first or hexd
with open(os.path.join(root, "..", "first"), "w") as f:
    f.write(first)
PY
sync
[ "${DROP_CACHES:-0}" = 1 ] && echo 3 > /proc/sys/vm/drop_caches
first="$(cat "$work/first")"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

start=$(date +%s%N)
java -Xmx256m -jar "$jar" --port "$port" --storage "$work/data" --upstream http://127.0.0.1:9 >"$work/log" 2>&1 &
pid=$!
until curl -fs -o /dev/null "http://127.0.0.1:$port/v2/"; do sleep 0.01; done
up=$(( ($(date +%s%N) - start) / 1000000 ))
curl -fs -o /dev/null "http://127.0.0.1:$port/v2/library/x/blobs/sha256:$first"
served=$(( ($(date +%s%N) - start) / 1000000 ))
until grep -q "cache index ready" "$work/log"; do sleep 0.05; done
indexed=$(( ($(date +%s%N) - start) / 1000000 ))
echo "stored blobs:               $count"
echo "first 200 on /v2/:          ${up} ms after launch"
echo "a stored blob served:       ${served} ms after launch"
echo "index complete:             ${indexed} ms after launch"
grep "cache index ready" "$work/log" | sed 's/^/log: /'
