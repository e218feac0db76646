#!/usr/bin/env bash
# Builds the container image and checks it for real, with Debian's Docker daemon: stand-in base
# images made with debootstrap from the Debian archive apt uses (a JRE one, and a JDK + Maven one
# for the build stage, which reaches Maven Central with this machine's Java trust store); the image
# built from docker/Dockerfile; then it is run as a user would run it, with a memory limit, in front
# of CNCF Distribution (docker-registry) holding images made here, and checked: non-root, healthy,
# heap sized from the limit, an image pulled through it with skopeo has the upstream's digest, a
# restart serves it from the volume, docker stop ends it promptly and cleanly, and an
# OutOfMemoryError ends the process. Then docker/cluster/compose.yaml's three replicas of the image
# behind its haproxy.cfg: pulls through the load balancer with skopeo and a Docker daemon, each blob
# fetched and stored once, and a replica killed without the pulls noticing.
#
# Needs root (it starts its own dockerd: vfs storage, no iptables, host network). Installs
# debootstrap, docker.io, containerd, docker-registry and skopeo when missing. The daemon's data
# (stand-in bases, build cache) stays in $STATE between runs, so a second run takes a minute.
#   sudo scripts/container-check.sh           # build if needed and check
#   sudo scripts/container-check.sh --clean   # forget $STATE first (fresh stand-ins and cache)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts a Docker daemon" >&2; exit 2; }
STATE=${REGISTRY_MIRROR_CHECK_STATE:-/var/tmp/registry-mirror-container-check}
[ "${1:-}" = "--clean" ] && rm -rf "$STATE"
for p in debootstrap dockerd containerd docker-registry skopeo curl docker-compose haproxy; do
  command -v $p >/dev/null || { apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap docker.io containerd docker-registry skopeo curl \
      docker-compose haproxy >/dev/null
    break; }
done

started=$(date +%s)
step() { echo "[$(( $(date +%s) - started ))s] $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
W=$(mktemp -d /tmp/container-check.XXXX); REG=127.0.0.1:5301; PORT=5302
mkdir -p "$STATE"
pids=()
D="docker -H unix://$STATE/docker.sock"
cleanup() {
  $D rm -f registry-mirror-check >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  umount "$W/rootfs/proc" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
wait_up() { for _ in $(seq 1 300); do curl -sf "http://$1/v2/" >/dev/null && return 0; sleep 0.1; done; fail "$1 not up"; }
. scripts/lib/check.sh

# ---------------------------------------------------------------- the Docker daemon
cat > "$W/daemon.json" <<JSON
{"storage-driver": "vfs", "iptables": false, "ip6tables": false, "bridge": "none",
 "data-root": "$STATE/docker", "exec-root": "$STATE/exec", "hosts": ["unix://$STATE/docker.sock"],
 "pidfile": "$STATE/docker.pid"}
JSON
dockerd --config-file "$W/daemon.json" --containerd-namespace mirrorimage --containerd-plugins-namespace mirrorimage-p \
  > "$W/dockerd.log" 2>&1 & pids+=($!)
for _ in $(seq 1 150); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
$D info >/dev/null 2>&1 || { cat "$W/dockerd.log"; fail "dockerd did not start"; }
step "dockerd up ($($D version --format '{{.Server.Version}}'))"

# ---------------------------------------------------------------- stand-in base images
JRE=registry-mirror-base/jre:bookworm; JDK=registry-mirror-base/jdk-maven:bookworm
if ! $D image inspect $JRE >/dev/null 2>&1 || ! $D image inspect $JDK >/dev/null 2>&1; then
  MIRROR=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n 1)
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
  R=$W/rootfs
  step "debootstrap bookworm from $MIRROR (JRE)"
  debootstrap --variant=minbase --include=openjdk-17-jre-headless,ca-certificates,passwd bookworm "$R" "$MIRROR" \
    > "$W/debootstrap.log" 2>&1 || { tail -n 30 "$W/debootstrap.log"; fail "debootstrap"; }
  # Reach TLS hosts as this machine does: its CA certificates and its Java trust store.
  cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
  cp /etc/ssl/certs/java/cacerts "$R/etc/ssl/certs/java/cacerts"
  chroot "$R" apt-get clean; rm -rf "$R"/var/lib/apt/lists/*
  tar -C "$R" -c . | $D import -c 'ENV LANG=C.UTF-8' - $JRE >/dev/null
  step "imported $JRE"
  mount -t proc proc "$R/proc"; cp /etc/resolv.conf "$R/etc/resolv.conf"
  chroot "$R" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -qq --no-install-recommends openjdk-17-jdk-headless maven \
    > "$W/apt.log" 2>&1 || { tail -n 30 "$W/apt.log"; fail "apt-get install in the JDK stand-in"; }
  umount "$R/proc"
  cp /etc/ssl/certs/java/cacerts "$R/etc/ssl/certs/java/cacerts"   # ca-certificates-java rewrote it
  chroot "$R" apt-get clean; rm -rf "$R"/var/lib/apt/lists/*
  tar -C "$R" -c . | $D import -c 'ENV LANG=C.UTF-8' - $JDK >/dev/null
  rm -rf "$R"
  step "imported $JDK"
fi

# ---------------------------------------------------------------- the image
step "docker build"
DOCKER_BUILDKIT=0 $D build -q --network host -f docker/Dockerfile --build-arg BUILD_IMAGE=$JDK \
  --build-arg RUNTIME_IMAGE=$JRE -t registry-mirror:check . > "$W/build.log" 2>&1 \
  || { tail -n 40 "$W/build.log"; fail "docker build"; }
step "built registry-mirror:check ($($D image inspect --format '{{.Size}}' registry-mirror:check | awk '{printf "%.0f MB", $1/1e6}'))"

# ---------------------------------------------------------------- an upstream with images made here
. scripts/lib/oci-layout.sh
oci_layout "$W/layout" "$W"
printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/reg}}\nhttp: {addr: %s}\n' "$W" $REG > "$W/registry.yml"
docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 & pids+=($!)
wait_up $REG
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/layout:single" docker://$REG/library/alpine:3.19
skopeo --insecure-policy copy -q --all --dest-tls-verify=false "oci:$W/layout:multi" docker://$REG/library/busybox:latest

# ---------------------------------------------------------------- run it
mkdir -p "$W/data"; chown 10001:10001 "$W/data"
run() {
  $D run -d --name registry-mirror-check --network host --memory 512m --health-interval 1s --health-start-period 30s \
    -e REGISTRY_MIRROR_PORT=$PORT -v "$W/data:/var/lib/registry-mirror" registry-mirror:check --upstream http://$REG >/dev/null
}
t0=$(date +%s%N); run; wait_up 127.0.0.1:$PORT
step "answering $(( ($(date +%s%N) - t0) / 1000000 )) ms after docker run"
for _ in $(seq 1 300); do
  [ "$($D inspect --format '{{.State.Health.Status}}' registry-mirror-check)" = healthy ] && break; sleep 0.1
done
[ "$($D inspect --format '{{.State.Health.Status}}' registry-mirror-check)" = healthy ] || fail "not healthy"
uid=$($D exec registry-mirror-check id -u); [ "$uid" = 10001 ] || fail "runs as uid $uid, not 10001"
heap=$($D logs registry-mirror-check 2>&1 | sed -n 's/.*heap \([0-9]*\) MiB.*/\1/p' | head -n 1)
[ -n "$heap" ] && [ "$heap" -ge 250 ] && [ "$heap" -le 320 ] || fail "heap ${heap:-?} MiB is not 60% of the 512 MiB limit"
step "healthy, uid $uid, heap $heap MiB of a 512 MiB limit"

pull() { # ref [address] -> checks the digest through the mirror (or address) against the upstream's
  local via want at=${2:-127.0.0.1:$PORT}
  via=$(skopeo --insecure-policy inspect --raw --tls-verify=false docker://$at/library/$1 | sha256sum | cut -d' ' -f1)
  want=$(skopeo --insecure-policy inspect --raw --tls-verify=false docker://$REG/library/$1 | sha256sum | cut -d' ' -f1)
  [ "$via" = "$want" ] || fail "$1: digest through $at sha256:$via, upstream sha256:$want"
  rm -rf "$W/pulled"; skopeo --insecure-policy copy -q --all --src-tls-verify=false docker://$at/library/$1 "oci:$W/pulled:x"
  step "pulled $1 through $at: sha256:$via, as upstream"
}
pull alpine:3.19
pull busybox:latest
rss=$($D stats --no-stream --format '{{.MemUsage}}' registry-mirror-check)
step "memory after the pulls: $rss"

t0=$(date +%s%N); $D stop -t 30 registry-mirror-check >/dev/null; ms=$(( ($(date +%s%N) - t0) / 1000000 ))
code=$($D inspect --format '{{.State.ExitCode}}' registry-mirror-check)
$D logs registry-mirror-check > "$W/run1.log" 2>&1
grep -q 'shutting down' "$W/run1.log" && grep -q 'INFO  Main - stopped' "$W/run1.log" || { tail "$W/run1.log"; fail "no clean stop in the log"; }
[ "$code" = 143 ] || fail "exit code $code after docker stop (want 143: SIGTERM, shutdown hooks ran)"
[ "$ms" -lt 10000 ] || fail "docker stop took $ms ms"
step "docker stop: $ms ms, exit code $code (SIGTERM), log: $(grep -o 'Main - stopped' "$W/run1.log")"

$D rm registry-mirror-check >/dev/null
before=$(grep -c . "$W/registry.log" || true)
run; wait_up 127.0.0.1:$PORT
$D logs registry-mirror-check 2>&1 | grep -q 'cache index ready' || fail "no index line after the restart"
pull alpine:3.19
hits=$(curl -s http://127.0.0.1:$PORT/metrics | sed -n 's/^registrymirror_cache_hits_total{kind="blob"} \([0-9.]*\)$/\1/p')
[ "${hits%.*}" -ge 2 ] || fail "after the restart the blobs were not served from the volume (hits: ${hits:-none})"
step "restarted on the same volume: blobs from cache ($hits hits); $($D logs registry-mirror-check 2>&1 | grep -o 'cache index ready.*' | head -n 1)"
$D stop -t 30 registry-mirror-check >/dev/null; $D rm registry-mirror-check >/dev/null

out=$($D run --rm --network host -e JAVA_TOOL_OPTIONS=-Xmx6m registry-mirror:check --port 5303 --upstream http://$REG 2>&1) && code=0 || code=$?
echo "$out" | grep -q 'Terminating due to java.lang.OutOfMemoryError' || { echo "$out" | tail; fail "no OutOfMemoryError exit"; }
step "with a 6 MiB heap: exit code $code, 'Terminating due to java.lang.OutOfMemoryError'"

# ---------------------------------------------------------------- three replicas as one cache
# docker/cluster/compose.yaml's replicas (this image), and its haproxy.cfg with Debian's haproxy (the
# compose file's haproxy image cannot be pulled here); pulls through the load balancer with skopeo
# and with a Docker daemon whose registry-mirrors is the load balancer; each blob fetched from the
# upstream once and stored once; a replica killed, and pulls go on.
$D tag registry-mirror:check registry-mirror:latest
export MIRROR_CLUSTER_SECRET REGISTRY_MIRROR_UPSTREAM=http://$REG MIRROR_HOST=127.0.0.1
MIRROR_CLUSTER_SECRET=$(openssl rand -hex 32)
COMPOSE="docker-compose -H unix://$STATE/docker.sock -p registry-mirror-cluster-check -f docker/cluster/compose.yaml"
compose_down() { $COMPOSE down -v >/dev/null 2>&1 || true; }
trap 'compose_down; cleanup' EXIT
mark=$(grep -c . "$W/registry.log" || true)
$COMPOSE up -d --no-build replica-1 replica-2 replica-3 > "$W/compose.log" 2>&1 || { cat "$W/compose.log"; fail "compose up"; }
for port in 5001 5002 5003; do wait_up 127.0.0.1:$port; done
members() { curl -s "http://127.0.0.1:$1/metrics" | sed -n 's/^registrymirror_cluster_members \([0-9]*\).*/\1/p'; }
for port in 5001 5002 5003; do
  for _ in $(seq 1 300); do [ "$(members $port)" = 3 ] && break; sleep 0.1; done
  [ "$(members $port)" = 3 ] || fail "replica on $port sees $(members $port) members, not 3"
done
step "three replicas up (compose), each sees 3 members"
LB=127.0.0.1:5310
HAPROXY_BIND=$LB haproxy -db -f docker/cluster/haproxy.cfg > "$W/haproxy.log" 2>&1 & pids+=($!)
wait_up $LB
pull alpine:3.19 $LB
pull busybox:latest $LB
DMAIN=$D; start_dockerd "http://$LB" clustercheck; DPULL=$D; D=$DMAIN
for ref in alpine:3.19 busybox:latest; do
  $DPULL pull -q $ref >/dev/null || fail "docker pull $ref through the load balancer"
  got=$($DPULL image inspect --format '{{index .RepoDigests 0}}' $ref | cut -d@ -f2)
  want=sha256:$(skopeo --insecure-policy inspect --raw --tls-verify=false docker://$REG/library/$ref | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "docker pull $ref: $got, upstream $want"
done
step "docker pull alpine:3.19 and busybox:latest through the load balancer: the upstream's digests"
fetched=$(tail -n +$((mark + 1)) "$W/registry.log" | grep -o '"GET /v2/library/[a-z]*/blobs/sha256:[0-9a-f]* [^"]*" 200' | sort | uniq -c)
most=$(echo "$fetched" | awk '{print $1}' | sort -n | tail -n 1)
distinct=$(echo "$fetched" | grep -c . || true)
[ "$most" = 1 ] || { echo "$fetched"; fail "a blob was fetched from the upstream $most times"; }
stored=0
for port in 5001 5002 5003; do
  n=$(curl -s "http://127.0.0.1:$port/metrics" | sed -n 's/^registrymirror_stored_items{kind="blob"} \([0-9]*\).*/\1/p')
  stored=$((stored + ${n:-0}))
done
[ "$stored" = "$distinct" ] || fail "$stored blobs stored across the replicas for $distinct fetched"
step "$distinct blobs, each fetched from the upstream once and stored once across the three"
$D kill -s KILL registry-mirror-cluster-check_replica-2_1 >/dev/null 2>&1 || $D kill -s KILL registry-mirror-cluster-check-replica-2-1 >/dev/null
for _ in $(seq 1 300); do [ "$(members 5001)" = 2 ] && break; sleep 0.1; done
[ "$(members 5001)" = 2 ] || fail "the others did not see the killed replica go"
rm -rf "$W/pulled"
for _ in 1 2 3 4; do   # round robin: each replica, the dead one's turn too (haproxy takes it out)
  skopeo --insecure-policy copy -q --all --src-tls-verify=false docker://$LB/library/busybox:latest "oci:$W/pulled:x" \
    || fail "a pull through the load balancer failed after a replica was killed"
done
step "replica-2 killed (kill -9): the others saw it go, pulls through the load balancer go on"
compose_down
step "all checks passed"
