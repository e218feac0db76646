#!/usr/bin/env bash
# The benchmark's one command: installs what it needs (Debian packages), builds the jar if missing,
# then runs bench/bench.py. See bench/bench.py --help.
#   bench/run.sh            full run, a few minutes; writes bench/results.md
#   bench/run.sh --smoke    a few seconds, tiny blob; what CI runs
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -ntp -DskipTests package
exec python3 bench/bench.py "$@"
