#!/usr/bin/env bash
# The mirror over HTTPS with client certificates, pulled through by the real clients: Docker's
# daemon (registry-mirrors = https://..., the CA and a client certificate in
# /etc/docker/certs.d/<host:port>/) and containerd (ctr with a hosts.toml naming ca and client).
# CNCF Distribution (docker-registry) stands in for Docker Hub, with images made here; certificates
# come from openssl. Digests are compared with the upstream's, and a client without a certificate
# is refused.
# Needs root (it starts its own dockerd and containerd, and writes /etc/docker/certs.d/<this host's
# address>:5402, removed at the end). Installs docker.io, containerd, docker-registry, skopeo and openssl when missing.
#   sudo scripts/tls-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root: it starts a Docker daemon and containerd" >&2; exit 2; }
for p in dockerd containerd ctr docker-registry skopeo openssl curl; do
  command -v $p >/dev/null || { apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io containerd docker-registry skopeo openssl curl >/dev/null
    break; }
done
[ -f proxy/target/registry-mirror.jar ] || mvn -B -q -DskipTests package

started=$(date +%s)
step() { echo "[$(( $(date +%s) - started ))s] $*"; }
fail() { echo "FAIL: $*" >&2; tail -n 20 "$W/mirror.log" >&2 || true; exit 1; }
W=$(mktemp -d /tmp/tls-check.XXXX); REG=127.0.0.1:5401; MIR=127.0.0.1:5402
. scripts/lib/check.sh
. scripts/lib/oci-layout.sh
HOST_IP=$(host_ip)   # for Docker's daemon, which sends loopback registries no client certificate
PUB=$HOST_IP:${MIR#*:}
CERTS_D=/etc/docker/certs.d/$PUB
pids=()
trap 'stop_all "$CERTS_D"' EXIT

# ---------------------------------------------------------------- certificates
pki_ca "tls-check CA"
pki_issue server mirror.lan "subjectAltName=IP:127.0.0.1,IP:$HOST_IP,DNS:localhost
extendedKeyUsage=serverAuth"
pki_issue node-1 node-1 "extendedKeyUsage=clientAuth"
step "certificates made"

# ---------------------------------------------------------------- upstream and mirror
oci_layout "$W/layout" "$W"
start_upstream $REG
skopeo --insecure-policy copy -q --dest-tls-verify=false "oci:$W/layout:single" docker://$REG/library/alpine:3.19
skopeo --insecure-policy copy -q --all --dest-tls-verify=false "oci:$W/layout:multi" docker://$REG/library/busybox:latest

cat > "$W/mirror.yaml" <<YAML
server:
  port: ${MIR#*:}
  tls: {certFile: $W/server.crt, keyFile: $W/server.key, clientCaFile: $W/ca.crt}
storage: {path: $W/mirror}
upstreams:
  - {name: docker.io, url: "http://$REG"}
YAML
java -jar proxy/target/registry-mirror.jar --config "$W/mirror.yaml" > "$W/mirror.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
  curl -sf --cacert "$W/ca.crt" --cert "$W/node-1.crt" --key "$W/node-1.key" https://$MIR/v2/ >/dev/null && break; sleep 0.1
done
curl -sf --cacert "$W/ca.crt" --cert "$W/node-1.crt" --key "$W/node-1.key" https://$MIR/v2/ >/dev/null || fail "mirror not up"
if curl -s --cacert "$W/ca.crt" https://$MIR/v2/ >/dev/null 2>&1; then fail "a client without a certificate was answered"; fi
step "mirror on https://$MIR; curl without a client certificate refused"

want() { skopeo --insecure-policy inspect --raw --tls-verify=false "docker://$REG/library/$1" | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------- Docker's daemon
mkdir -p "$CERTS_D"
cp "$W/ca.crt" "$CERTS_D/ca.crt"; cp "$W/node-1.crt" "$CERTS_D/client.cert"; cp "$W/node-1.key" "$CERTS_D/client.key"
start_dockerd "https://$PUB" tlscheck
$D pull -q alpine:3.19 >/dev/null || fail "docker pull through the mirror"
got=$($D image inspect --format '{{index .RepoDigests 0}}' alpine:3.19 | cut -d@ -f2)
[ "$got" = "sha256:$(want alpine:3.19)" ] || fail "docker pulled $got, upstream has sha256:$(want alpine:3.19)"
grep -q 'fetching manifest library/alpine:3.19' "$W/mirror.log" || fail "the daemon did not go through the mirror"
step "docker pull alpine:3.19 via https://$PUB with a client certificate: $got, as upstream"

# ---------------------------------------------------------------- containerd
mkdir -p "$W/hosts/docker.io"
cat > "$W/hosts/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"
[host."https://$MIR"]
  capabilities = ["pull", "resolve"]
  ca = "$W/ca.crt"
  client = [["$W/node-1.crt", "$W/node-1.key"]]
TOML
start_containerd
$C images pull --hosts-dir "$W/hosts" docker.io/library/busybox:latest > "$W/ctr.log" 2>&1 || { cat "$W/ctr.log"; fail "ctr pull through the mirror"; }
got=$($C images ls name==docker.io/library/busybox:latest | awk 'NR==2 {print $3}')
[ "$got" = "sha256:$(want busybox:latest)" ] || fail "ctr pulled $got, upstream has sha256:$(want busybox:latest)"
grep -q 'fetching manifest library/busybox:latest' "$W/mirror.log" || fail "containerd did not go through the mirror"
step "ctr pull busybox:latest (hosts.toml ca + client): $got, as upstream"

sed -i '/client = /d' "$W/hosts/docker.io/hosts.toml"
$C images rm docker.io/library/busybox:latest >/dev/null
if $C images pull --hosts-dir "$W/hosts" docker.io/library/busybox:latest > "$W/ctr2.log" 2>&1; then
  fail "ctr without a client certificate pulled (there is no other way to the image here)"
fi
step "ctr without a client certificate: not served by the mirror"

# ---------------------------------------------------------------- HTTPS without client certificates
kill "${pids[1]}"; wait "${pids[1]}" 2>/dev/null || true
sed -i -e 's|, clientCaFile: [^}]*}|}|' -e 's|/mirror}|/mirror2}|' "$W/mirror.yaml"   # and a new cache
java -jar proxy/target/registry-mirror.jar --config "$W/mirror.yaml" > "$W/mirror2.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do curl -sf --cacert "$W/ca.crt" https://$MIR/v2/ >/dev/null && break; sleep 0.1; done
rm "$CERTS_D/client.cert" "$CERTS_D/client.key"   # only the CA now
$D pull -q busybox:latest >/dev/null || fail "docker pull over HTTPS without a client certificate"
got=$($D image inspect --format '{{index .RepoDigests 0}}' busybox:latest | cut -d@ -f2)
[ "$got" = "sha256:$(want busybox:latest)" ] || fail "docker pulled $got, upstream has sha256:$(want busybox:latest)"
grep -q 'fetching manifest library/busybox:latest' "$W/mirror2.log" || fail "the daemon did not go through the mirror"
step "docker pull busybox:latest via https://$PUB, only the CA in certs.d: $got, as upstream"
step "all checks passed"
