#!/usr/bin/env bash
# Pulls official and multi-arch images with a real Docker daemon whose registry-mirrors points at
# the mirror, and compares digests with the upstream. Everything on loopback: CNCF Distribution
# (docker-registry) stands in for Docker Hub, seeded with images built here.
# Needs root (it starts its own dockerd with the vfs driver); installs docker.io, docker-registry
# and skopeo when missing. Not part of CI. Usage: sudo scripts/docker-daemon-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts a Docker daemon" >&2; exit 2; }
for p in docker-registry skopeo dockerd; do
  command -v $p >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-registry skopeo >/dev/null; break; }
done
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -DskipTests package

W=$(mktemp -d /tmp/mirror-check.XXXX); REG=127.0.0.1:5101; MIR=127.0.0.1:5102
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 1; rm -rf "$W"; }
trap cleanup EXIT
wait_up() { for _ in $(seq 1 100); do curl -sf "http://$1/v2/" >/dev/null && return 0; sleep 0.1; done; echo "$1 not up" >&2; exit 1; }

# An OCI layout with "single" (amd64) and "multi" (amd64 + arm64 index), real gzip'd tar layers.
. scripts/lib/oci-layout.sh
. scripts/lib/check.sh
L=$W/layout; oci_layout $L $W

start_upstream $REG
skopeo --insecure-policy copy -q --dest-tls-verify=false oci:$L:single docker://$REG/library/alpine:3.19
skopeo --insecure-policy copy -q --all --dest-tls-verify=false oci:$L:multi docker://$REG/library/busybox:latest

java -jar proxy/target/registry-mirror.jar --port ${MIR#*:} --storage $W/mirror --upstream http://$REG > $W/mirror.log 2>&1 & pids+=($!)
wait_up $MIR

start_dockerd "http://$MIR" mirrorcheck

fail=0
for ref in alpine:3.19 busybox:latest; do
  $D pull -q $ref >/dev/null
  got=$($D image inspect --format '{{index .RepoDigests 0}}' $ref | cut -d@ -f2)
  want=sha256:$(skopeo --insecure-policy inspect --raw --tls-verify=false docker://$REG/library/$ref | sha256sum | cut -d' ' -f1)
  if [ "$got" = "$want" ]; then echo "ok   $ref $got"; else echo "FAIL $ref got $got want $want"; fail=1; fi
done
grep -q 'fetching manifest library/alpine:3.19' $W/mirror.log || { echo "FAIL the daemon did not go through the mirror"; fail=1; }
curl -s http://$MIR/metrics | grep -E '^registrymirror_(cache_(hits|misses)|served_bytes)_total'
exit $fail
