#!/usr/bin/env bash
# Access rules with the real clients, over HTTPS: a mirror whose users come from `htpasswd -B` and
# whose rules keep docker.io/private/** to alice, in front of CNCF Distribution (docker-registry)
# holding a public and a private image made here. Checks that skopeo --creds pulls the private one
# as alice and is refused without credentials (401) and as bob (403); Podman pulls it after
# `podman login` to the mirror's host; containerd pulls it with a static Authorization header in
# hosts.toml; and Docker's daemon, with the mirror in registry-mirrors, pulls the public image
# anonymously through the token flow while the private one is refused. Digests are compared with
# the upstream's.
# Needs root (own dockerd and containerd; writes /etc/docker/certs.d/<this host's address>:5502 and
# /etc/containers/certs.d/<same>, removed at the end). Installs docker.io, containerd, podman,
# docker-registry, skopeo, apache2-utils and openssl when missing.
#   sudo scripts/access-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts a Docker daemon and containerd" >&2; exit 2; }
for p in dockerd containerd ctr podman docker-registry skopeo htpasswd openssl curl; do
  command -v $p >/dev/null || { apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io containerd podman docker-registry skopeo \
      apache2-utils openssl curl >/dev/null
    break; }
done
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -DskipTests package

started=$(date +%s)
step() { echo "[$(( $(date +%s) - started ))s] $*"; }
fail() { echo "FAIL: $*" >&2; tail -n 20 "$W/mirror.log" >&2 || true; exit 1; }
W=$(mktemp -d /tmp/access-check.XXXX); REG=127.0.0.1:5501
. scripts/lib/check.sh
. scripts/lib/oci-layout.sh
HOST_IP=$(host_ip)
MIR=$HOST_IP:5502   # Docker sends no credentials to loopback registries, which it counts as insecure
DOCKER_CERTS=/etc/docker/certs.d/$MIR; PODMAN_CERTS=/etc/containers/certs.d/$MIR
pids=()
trap 'stop_all "$DOCKER_CERTS" "$PODMAN_CERTS"' EXIT

# ---------------------------------------------------------------- certificates, users, upstream
pki_ca "access-check CA"
pki_issue server mirror.lan "subjectAltName=IP:$HOST_IP,IP:127.0.0.1
extendedKeyUsage=serverAuth"
alice_and_bob
oci_layout "$W/layout" "$W"
start_upstream $REG
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/layout:single" docker://$REG/library/alpine:3.19
skopeo --insecure-policy copy -q --all --dest-tls-verify=false "oci:$W/layout:multi" docker://$REG/private/app:1
want() { skopeo --insecure-policy inspect --raw --tls-verify=false "docker://$REG/$1" | sha256sum | cut -d' ' -f1; }

cat > "$W/mirror.yaml" <<YAML
server:
  port: ${MIR#*:}
  tls: {certFile: $W/server.crt, keyFile: $W/server.key}
storage: {path: $W/mirror}
upstreams:
  - {name: docker.io, url: "http://$REG"}
access:
  users: $W/htpasswd
  rules:
    - repositories: ["docker.io/private/**"]
      pull: [alice]
    - repositories: ["**"]
      pull: [anonymous]
YAML
java -jar proxy/target/registry-mirror.jar --config "$W/mirror.yaml" > "$W/mirror.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -s -o /dev/null --cacert "$W/ca.crt" https://$MIR/v2/ && break; sleep 0.1; done
step "mirror on https://$MIR with 2 users from htpasswd -B"
mkdir -p "$W/certs" "$DOCKER_CERTS" "$PODMAN_CERTS"
cp "$W/ca.crt" "$W/certs/ca.crt"; cp "$W/ca.crt" "$DOCKER_CERTS/ca.crt"; cp "$W/ca.crt" "$PODMAN_CERTS/ca.crt"

# ---------------------------------------------------------------- skopeo --creds
S="skopeo --insecure-policy"
got=$($S inspect --raw --cert-dir "$W/certs" --creds alice:alice-pw-1 docker://$MIR/private/app:1 | sha256sum | cut -d' ' -f1)
[ "$got" = "$(want private/app:1)" ] || fail "skopeo as alice got sha256:$got"
$S copy -q --all --src-cert-dir "$W/certs" --src-creds alice:alice-pw-1 docker://$MIR/private/app:1 "oci:$W/pulled:app"
out=$($S inspect --raw --cert-dir "$W/certs" docker://$MIR/private/app:1 2>&1) && fail "skopeo without credentials pulled" || true
echo "$out" | grep -qi "authentication required\|unauthorized" || fail "skopeo without credentials: $out"
out=$($S inspect --raw --cert-dir "$W/certs" --creds bob:bob-pw-2 docker://$MIR/private/app:1 2>&1) && fail "skopeo as bob pulled" || true
echo "$out" | grep -qi "denied" || fail "skopeo as bob: $out"
step "skopeo --creds alice pulled private/app:1 (sha256:$got); without credentials: unauthorized; as bob: denied"

# ---------------------------------------------------------------- podman login
P="podman --root $W/podman/root --runroot $W/podman/run --storage-driver vfs"
$P login --authfile "$W/auth.json" -u alice -p alice-pw-1 $MIR > "$W/podman-login.log" 2>&1 || { cat "$W/podman-login.log"; fail "podman login"; }
$P pull -q --authfile "$W/auth.json" --arch amd64 $MIR/private/app:1 > "$W/podman-pull.log" 2>&1 || { cat "$W/podman-pull.log"; fail "podman pull"; }
got=$($P image inspect --format '{{.Digest}}' $MIR/private/app:1)
[ "$got" = "sha256:$(want private/app:1)" ] || fail "podman pulled $got"
grep -q 'password' "$W/mirror.log" && grep -q 'alice-pw-1' "$W/mirror.log" && fail "a password in the log"
step "podman login + pull private/app:1: $got, as upstream"

# ---------------------------------------------------------------- containerd, static header
mkdir -p "$W/hosts/docker.io"
cat > "$W/hosts/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"
[host."https://$MIR"]
  capabilities = ["pull", "resolve"]
  ca = "$W/ca.crt"
  [host."https://$MIR".header]
    Authorization = ["Basic $(printf 'alice:alice-pw-1' | base64)"]
TOML
start_containerd
$C images pull --hosts-dir "$W/hosts" docker.io/private/app:1 > "$W/ctr.log" 2>&1 || { cat "$W/ctr.log"; fail "ctr pull"; }
got=$($C images ls name==docker.io/private/app:1 | awk 'NR==2 {print $3}')
[ "$got" = "sha256:$(want private/app:1)" ] || fail "ctr pulled $got"
step "ctr pull private/app:1 with a static Authorization header: $got, as upstream"

# ---------------------------------------------------------------- Docker's daemon, anonymous
start_dockerd "https://$MIR" accesscheck
$D pull -q alpine:3.19 >/dev/null || fail "docker pull of a public image through the mirror"
got=$($D image inspect --format '{{index .RepoDigests 0}}' alpine:3.19 | cut -d@ -f2)
[ "$got" = "sha256:$(want library/alpine:3.19)" ] || fail "docker pulled $got"
grep -q 'fetching manifest library/alpine:3.19' "$W/mirror.log" || fail "the daemon did not go through the mirror"
if $D pull -q private/app:1 >/dev/null 2>&1; then fail "docker pulled the private image anonymously"; fi
grep -q 'access: refused GET /v2/private/app/manifests/1 .*(anonymous)' "$W/mirror.log" || fail "the refusal was not logged"
step "docker pull alpine:3.19 anonymously through the token flow: $got; private/app:1 refused"
if grep -E 'alice-pw-1|bob-pw-2|Basic [A-Za-z0-9+/=]{8}|Bearer [A-Za-z0-9_-]{20}' "$W/mirror.log"; then fail "a secret in the log"; fi
step "all checks passed"
