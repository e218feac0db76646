#!/usr/bin/env bash
# Runs every test: unit and integration tests (fake upstream) and the end-to-end tests with real
# parts (CNCF Distribution as upstream, skopeo as client, promtool for the metrics, Chromium for the
# status page), then the benchmarks in their smoke modes (seconds), so that they keep working.
# Installs the Debian packages those need when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v mvn >/dev/null 2>&1 || need+=(maven)
command -v tar >/dev/null 2>&1 || need+=(tar)
command -v nginx >/dev/null 2>&1 || need+=(nginx-light)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)            # the cluster's load balancer (container-check)
command -v chromium >/dev/null 2>&1 || need+=(chromium)          # the status page's browser test
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mvn -B -ntp verify "$@"
bench/scale.sh 2000   # the large-cache benchmark on a small cache (seconds), so that it keeps working
bench/run.sh --smoke
bench/push.py --smoke   # pushes to hosted repositories against Distribution (seconds)
bench/cluster.sh 3 --small   # three replicas as one cache: one fetch per blob, kill -9 and return (seconds)
# The container image, built and run with a real Docker daemon (about four minutes from nothing);
# it starts its own dockerd, which needs root.
# Then HTTPS and client certificates with Docker's daemon and containerd, and the access rules with
# skopeo, Podman, containerd and Docker, and hosted repositories with docker login/push/pull, Podman,
# skopeo and kill -9 mid-push (seconds each). They start their own daemons: root only.
if [ "$(id -u)" -eq 0 ]; then
  scripts/container-check.sh
  scripts/tls-check.sh
  scripts/access-check.sh
  scripts/hosted-check.sh
else
  echo "container-check, tls-check, access-check and hosted-check skipped: they start a Docker daemon, which needs root" \
       "(sudo scripts/container-check.sh; sudo scripts/tls-check.sh; sudo scripts/access-check.sh; sudo scripts/hosted-check.sh)"
fi
