# Sourced by the check scripts (tls-check.sh, access-check.sh, docker-daemon-check.sh): the parts they share. Each start_* function adds the
# process it starts to the caller's pids array (its cleanup kills them); W is the caller's scratch folder.

# This machine's first non-loopback IPv4 address. Docker counts loopback registries as insecure and
# then sends them no client certificate or credentials, so its daemon is pointed here instead.
host_ip() {
  local ip; ip=$(hostname -I | tr ' ' '\n' | grep -v '^127\.' | grep -m1 '\.' || true)
  [ -n "$ip" ] || { echo "no non-loopback IPv4 address for Docker's daemon to reach the mirror at" >&2; exit 2; }
  echo "$ip"
}

# stop_all DIR...: a check's cleanup (trap it on EXIT): stops the processes in pids, removes the
# given folders (certificates it put in place) and, unless KEEP is set, its scratch folder W.
stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$@"; [ -n "${KEEP:-}" ] || rm -rf "$W"
}

# alice_and_bob: $W/htpasswd with the users alice (alice-pw-1) and bob (bob-pw-2), bcrypt as htpasswd -B writes.
alice_and_bob() {
  htpasswd -B -b -c "$W/htpasswd" alice alice-pw-1 2>/dev/null; htpasswd -B -b "$W/htpasswd" bob bob-pw-2 2>/dev/null
}

# pki_ca CN: a CA (ca.crt, ca.key) in $W.
pki_ca() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$1" \
    -keyout "$W/ca.key" -out "$W/ca.crt" 2>/dev/null
}

# pki_issue NAME CN EXTENSIONS: NAME.crt and NAME.key in $W, signed by the CA.
pki_issue() {
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$2" -keyout "$W/$1.key" -out "$W/$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$W/$1.ext"
  openssl x509 -req -in "$W/$1.csr" -CA "$W/ca.crt" -CAkey "$W/ca.key" -CAcreateserial -days 2 -extfile "$W/$1.ext" \
    -out "$W/$1.crt" 2>/dev/null
}

# start_upstream ADDR: CNCF Distribution on ADDR, answering; push images to it with skopeo.
start_upstream() {
  printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s/reg}}\nhttp: {addr: %s}\n' "$W" "$1" \
    > "$W/registry.yml"
  docker-registry serve "$W/registry.yml" > "$W/registry.log" 2>&1 & pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://$1/v2/" >/dev/null && break; sleep 0.1; done
}

# start_dockerd MIRROR_URL NAMESPACE: a Docker daemon (vfs, no iptables) whose registry-mirrors is
# MIRROR_URL; sets D to its docker command.
start_dockerd() {
  cat > "$W/daemon.json" <<JSON
{"storage-driver": "vfs", "iptables": false, "ip6tables": false, "bridge": "none", "registry-mirrors": ["$1"],
 "data-root": "$W/docker", "exec-root": "$W/exec", "hosts": ["unix://$W/docker.sock"], "pidfile": "$W/docker.pid"}
JSON
  dockerd --config-file "$W/daemon.json" --containerd-namespace "$2" --containerd-plugins-namespace "$2-p" \
    > "$W/dockerd.log" 2>&1 & pids+=($!)
  D="docker -H unix://$W/docker.sock"
  for _ in $(seq 1 150); do $D info >/dev/null 2>&1 && break; sleep 0.2; done
}

# start_containerd: a containerd of its own; sets C to its ctr command.
start_containerd() {
  cat > "$W/containerd.toml" <<TOML
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
[grpc]
  address = "$W/containerd.sock"
TOML
  containerd --config "$W/containerd.toml" > "$W/containerd.log" 2>&1 & pids+=($!)
  C="ctr --address $W/containerd.sock"
  for _ in $(seq 1 100); do $C version >/dev/null 2>&1 && break; sleep 0.1; done
}
