#!/usr/bin/env bash
# Hosted repositories with the real clients, over HTTPS, beside the cache on the same endpoint: the
# README's recipe (docker login, tag, push, pull back, curl the tag list), a second image sharing
# the first one's layer ("Layer already exists" in the same repository, "Mounted from" in another),
# an anonymous push refused, Podman and skopeo pushes, a pull through the cache on the same endpoint,
# and kill -9 in the middle of a push: the images pushed before survive the restart with their
# digests, the interrupted one is not visible, and it can be pushed again.
# Needs root (own dockerd; writes /etc/docker/certs.d/<this host's address>:5602 and
# /etc/containers/certs.d/<same>, removed at the end). Installs docker.io, containerd, podman,
# docker-registry, skopeo, apache2-utils and openssl when missing.
#   sudo scripts/hosted-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts a Docker daemon" >&2; exit 2; }
for p in dockerd containerd podman docker-registry skopeo htpasswd openssl curl; do
  command -v $p >/dev/null || { apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io containerd podman docker-registry skopeo \
      apache2-utils openssl curl >/dev/null
    break; }
done
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -DskipTests package

started=$(date +%s)
step() { echo "[$(( $(date +%s) - started ))s] $*"; }
fail() { echo "FAIL: $*" >&2; tail -n 30 "$W/mirror.log" >&2 || true; exit 1; }
# Lower case only: Podman names an image loaded from an OCI layout after its path.
W=/tmp/hosted-check.$(od -An -N4 -tx4 /dev/urandom | tr -d ' '); mkdir -m 700 "$W"; REG=127.0.0.1:5601
. scripts/lib/check.sh
. scripts/lib/oci-layout.sh
HOST_IP=$(host_ip)
MIR=$HOST_IP:5602   # Docker sends no credentials to loopback registries, which it counts as insecure
DOCKER_CERTS=/etc/docker/certs.d/$MIR; PODMAN_CERTS=/etc/containers/certs.d/$MIR
pids=()
mirror_pid=
trap 'stop_all "$DOCKER_CERTS" "$PODMAN_CERTS"' EXIT

# ---------------------------------------------------------------- certificates, users, upstream, mirror
pki_ca "hosted-check CA"
pki_issue server registry.lan "subjectAltName=IP:$HOST_IP,IP:127.0.0.1
extendedKeyUsage=serverAuth"
alice_and_bob
oci_layout "$W/layout" "$W"
start_upstream $REG
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/layout:single" docker://$REG/library/alpine:3.19

cat > "$W/mirror.yaml" <<YAML
server:
  port: ${MIR#*:}
  tls: {certFile: $W/server.crt, keyFile: $W/server.key}
storage: {path: $W/mirror}
upstreams:
  - {name: docker.io, url: "http://$REG"}
hosted:
  repositories: ["team/**"]
access:
  users: $W/htpasswd
  rules:
    - repositories: ["team/**"]
      pull: [authenticated]
      push: [alice]
    - repositories: ["**"]
      pull: [anonymous]
YAML
start_mirror() {
  java -jar proxy/target/registry-mirror.jar --config "$W/mirror.yaml" >> "$W/mirror.log" 2>&1 & mirror_pid=$!
  pids+=($mirror_pid)
  for _ in $(seq 1 100); do curl -s -o /dev/null --cacert "$W/ca.crt" https://$MIR/v2/ && return 0; sleep 0.1; done
  fail "the mirror did not start"
}
start_mirror
step "mirror on https://$MIR: team/** hosted (alice pushes), the rest pulled through from $REG"
mkdir -p "$W/certs" "$DOCKER_CERTS" "$PODMAN_CERTS"
cp "$W/ca.crt" "$W/certs/ca.crt"; cp "$W/ca.crt" "$DOCKER_CERTS/ca.crt"; cp "$W/ca.crt" "$PODMAN_CERTS/ca.crt"
CURL="curl -s --cacert $W/ca.crt"
export DOCKER_CONFIG=$W/docker-cli   # docker login writes here, not to root's own config

# ---------------------------------------------------------------- the README's recipe, with Docker
start_dockerd "https://$MIR" hostedcheck
$D info >/dev/null 2>&1 || fail "dockerd did not start"
mkdir -p "$W/app"; echo "app 1.0" > "$W/app/version"; head -c 3000000 /dev/urandom > "$W/app/data"
tar -C "$W/app" -cf - . | $D import - app:1.0 >/dev/null
$D tag app:1.0 $MIR/team/app:1.0
if $D push $MIR/team/app:1.0 > "$W/push-anon.log" 2>&1; then fail "an anonymous docker push was accepted"; fi
grep -qi "unauthorized\|authentication required\|denied" "$W/push-anon.log" || { cat "$W/push-anon.log"; fail "anonymous push: no refusal"; }
echo bob-pw-2 | $D login -u bob --password-stdin $MIR >/dev/null 2>&1 || fail "docker login as bob"
if $D push $MIR/team/app:1.0 > "$W/push-bob.log" 2>&1; then fail "bob's push was accepted"; fi
grep -qi "denied" "$W/push-bob.log" || { cat "$W/push-bob.log"; fail "bob's push: no denial"; }
step "docker push refused anonymously and to bob (pull only)"
echo alice-pw-1 | $D login -u alice --password-stdin $MIR > "$W/login.log" 2>&1 || { cat "$W/login.log"; fail "docker login as alice"; }
$D push $MIR/team/app:1.0 > "$W/push1.log" 2>&1 || { cat "$W/push1.log"; fail "docker push team/app:1.0"; }
pushed=$(grep -o 'digest: sha256:[0-9a-f]*' "$W/push1.log" | cut -d' ' -f2)
[ -n "$pushed" ] || { cat "$W/push1.log"; fail "docker push printed no digest"; }
step "docker login alice + push team/app:1.0: $pushed"

tags=$($CURL -u alice:alice-pw-1 https://$MIR/v2/team/app/tags/list)
[ "$tags" = '{"name":"team/app","tags":["1.0"]}' ] || fail "tag list: $tags"
head=$($CURL -u alice:alice-pw-1 -I -H "Accept: application/vnd.docker.distribution.manifest.v2+json" \
  https://$MIR/v2/team/app/manifests/1.0 | tr -d '\r' | grep -i '^docker-content-digest' | cut -d' ' -f2)
[ "$head" = "$pushed" ] || fail "HEAD of the manifest: $head"
step "curl: tags/list $tags, HEAD manifests/1.0 names $head"

# A second image on top of the first: its base layer exists (same repository) or is mounted (another).
mkdir -p "$W/ctx"; echo "app 1.1" > "$W/ctx/version"
printf 'FROM %s/team/app:1.0\nCOPY version /version\n' "$MIR" > "$W/ctx/Dockerfile"
DOCKER_BUILDKIT=0 $D build -q -t $MIR/team/app:1.1 "$W/ctx" >/dev/null || fail "docker build of team/app:1.1"
$D push $MIR/team/app:1.1 > "$W/push2.log" 2>&1 || { cat "$W/push2.log"; fail "docker push team/app:1.1"; }
grep -q "Layer already exists" "$W/push2.log" || { cat "$W/push2.log"; fail "the shared layer was uploaded again"; }
$D tag $MIR/team/app:1.1 $MIR/team/other:1.1
$D push $MIR/team/other:1.1 > "$W/push3.log" 2>&1 || { cat "$W/push3.log"; fail "docker push team/other:1.1"; }
grep -q "Mounted from team/app" "$W/push3.log" || { cat "$W/push3.log"; fail "no cross-repository mount"; }
step "team/app:1.1 shares 1.0's layer: 'Layer already exists'; team/other:1.1: 'Mounted from team/app'"

$D rmi -f $MIR/team/app:1.0 app:1.0 >/dev/null
$D pull -q $MIR/team/app:1.0 >/dev/null || fail "docker pull team/app:1.0 back"
got=$($D image inspect --format '{{index .RepoDigests 0}}' $MIR/team/app:1.0 | cut -d@ -f2)
[ "$got" = "$pushed" ] || fail "pulled back $got, pushed $pushed"
$D pull -q alpine:3.19 >/dev/null || fail "docker pull alpine:3.19 through the same endpoint as a mirror"
grep -q 'fetching manifest library/alpine:3.19' "$W/mirror.log" || fail "alpine did not come through the mirror"
step "docker pull team/app:1.0 back: $got, as pushed; alpine:3.19 pulled through the cache on the same endpoint"

# ---------------------------------------------------------------- Podman and skopeo
P="podman --root $W/podman/root --runroot $W/podman/run --storage-driver vfs"
$P login --authfile "$W/auth.json" -u alice -p alice-pw-1 $MIR > "$W/podman.log" 2>&1 || { cat "$W/podman.log"; fail "podman login"; }
$P pull -q "oci:$W/layout:single" > "$W/podman-load.log" 2>&1 || { cat "$W/podman-load.log"; fail "podman load of the layout"; }
img=$($P images -q | head -1)
$P push -q --authfile "$W/auth.json" "$img" $MIR/team/podman:1 > "$W/podman-push.log" 2>&1 || { cat "$W/podman-push.log"; fail "podman push"; }
$P rmi -af >/dev/null 2>&1
$P pull -q --authfile "$W/auth.json" $MIR/team/podman:1 >/dev/null 2>&1 || fail "podman pull team/podman:1 back"
step "podman push + pull team/podman:1"
S="skopeo --insecure-policy"
$S copy -q --all --dest-cert-dir "$W/certs" --dest-creds alice:alice-pw-1 "oci:$W/layout:multi" docker://$MIR/team/multi:1
want=$(sha256sum < "$W/index.json" | cut -d' ' -f1)
got=$($S inspect --raw --cert-dir "$W/certs" --creds bob:bob-pw-2 docker://$MIR/team/multi:1 | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "skopeo: the index came back as sha256:$got, pushed sha256:$want"
step "skopeo copy --all of a two-platform index to team/multi:1; read back by bob: sha256:$got"

# ---------------------------------------------------------------- kill -9 in the middle of a push
head -c 150000000 /dev/urandom > "$W/big.bin"
mkdir -p "$W/big"; mv "$W/big.bin" "$W/big/data"
tar -C "$W/big" -cf - . | $D import - big:1 >/dev/null
$D tag big:1 $MIR/team/big:1
$D push $MIR/team/big:1 > "$W/push-big.log" 2>&1 & push_pid=$!
uploaded=0   # Docker compresses the layer first, then uploads it: wait until 20 MB have arrived
for _ in $(seq 1 1200); do
  uploaded=$(du -sb "$W/mirror/hosted/uploads" 2>/dev/null | cut -f1); [ "${uploaded:-0}" -gt 20000000 ] && break; sleep 0.05
done
[ "${uploaded:-0}" -gt 20000000 ] || { cat "$W/push-big.log"; fail "the big push never got under way"; }
kill -9 $mirror_pid; wait $mirror_pid 2>/dev/null || true
wait $push_pid 2>/dev/null && fail "the push survived kill -9 of the mirror" || true
start_mirror
tags=$($CURL -u alice:alice-pw-1 https://$MIR/v2/team/big/tags/list)
case "$tags" in *'"1"'*) fail "the interrupted push is visible: $tags";; esac
[ -z "$(ls -A "$W/mirror/hosted/uploads")" ] || fail "the interrupted upload's data is still there"
$D rmi -f $MIR/team/app:1.0 >/dev/null
$D pull -q $MIR/team/app:1.0 >/dev/null || fail "team/app:1.0 lost after kill -9"
got=$($D image inspect --format '{{index .RepoDigests 0}}' $MIR/team/app:1.0 | cut -d@ -f2)
[ "$got" = "$pushed" ] || fail "team/app:1.0 after kill -9: $got"
$D push $MIR/team/big:1 > "$W/push-big2.log" 2>&1 || { cat "$W/push-big2.log"; fail "pushing team/big:1 again"; }
step "kill -9 mid-push ($((uploaded >> 20)) MiB of a 150 MB layer uploaded): team/app:1.0 still $got; team/big:1 not visible, its upload gone; pushed again"

if grep -E 'alice-pw-1|bob-pw-2|Basic [A-Za-z0-9+/=]{8}|Bearer [A-Za-z0-9_-]{20}' "$W/mirror.log"; then fail "a secret in the log"; fi
step "all checks passed"
