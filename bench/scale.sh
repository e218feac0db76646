#!/usr/bin/env bash
# The mirror on a cache of N stored items at a small heap: time to /v2/, to a hit, to a complete index
# on a first start and on a restart, live heap, eviction rate and lookup latency meanwhile.
#   bench/scale.sh 1000000                 1M items at -Xmx256m (builds the folder in a temporary place)
#   bench/scale.sh 10000000 --heap 512m --keep /var/tmp/scale10m
# See bench/scale.py --help. Builds the jar first if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
command -v jcmd >/dev/null || { echo "jcmd (a JDK) is needed" >&2; exit 1; }
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -ntp -DskipTests package
exec python3 bench/scale.py "$@"
