#!/usr/bin/env bash
# The cluster benchmark: N replicas on loopback in front of one counting upstream. See bench/cluster.py.
#   bench/cluster.sh 3            the full run (several minutes: 64 clients pull one 1 GiB blob)
#   bench/cluster.sh 3 --small    seconds; what CI runs
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3)
command -v mvn >/dev/null || need+=(maven)
if [ ${#need[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -ntp -DskipTests package
exec python3 bench/cluster.py "$@"
