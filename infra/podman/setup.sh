#!/usr/bin/env bash
# Everything the compose stack needs on a Debian host with no registry: podman, podman-compose,
# and the images built here. Safe to re-run: each image is built once and reused while its inputs
# are unchanged. Used by .ci/run; by hand:
#
#   make install && infra/podman/setup.sh   # installs what is missing, builds what is missing
#   export CONTAINERS_CONF=$PWD/infra/podman/containers.conf
#   .venv/bin/python infra/podman/stack.py up --env-file infra/.env     # health-gated (see stack.py)
#   infra/podman/setup.sh --compose-path    # prints where podman-compose is
#
# Images (all local, `localhost/...`):
#   sluicegate-debian:bookworm  debootstrap minbase from this host's Debian mirror, plus its CA bundle
#   sluicegate-python:lock      + Debian's python3.11 + requirements.lock in /opt/venv (Prefect server, MLflow server)
#   sluicegate-postgres:15      + Debian's postgresql-15 (the official image cannot be pulled here)
#   sluicegate-worker:VERSION   + this checkout (Prefect worker, Dask): the only layers a code change rebuilds
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
STATE="${SLUICE_PODMAN_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluicegate-podman}"
COMPOSE_VERSION=1.6.0   # 1.6.0 removes its network on `down` (Debian's 1.0.3 leaves it behind)
COMPOSE="$STATE/venv/bin/podman-compose"
if [[ "${1:-}" == "--compose-path" ]]; then echo "$COMPOSE"; exit 0; fi

export CONTAINERS_CONF="$ROOT/infra/podman/containers.conf"
BASE=localhost/sluicegate-debian:bookworm
PYIMG=localhost/sluicegate-python:lock
PGIMG=localhost/sluicegate-postgres:15
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -1)"
WORKER="localhost/sluicegate-worker:$VERSION"
SECONDS=0
step() { printf '[setup %3ss] %s\n' "$SECONDS" "$*"; }

# 1. packages (what CI installs too). netavark + aardvark-dns (name resolution between services) and
# iptables (published ports) are only recommended or suggested by Debian's podman: ask for them
need=()
for pair in podman:podman runc:runc fuse-overlayfs:fuse-overlayfs newuidmap:uidmap slirp4netns:slirp4netns debootstrap:debootstrap \
  /usr/lib/podman/netavark:netavark /usr/lib/podman/aardvark-dns:aardvark-dns iptables:iptables; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  step "apt-get install ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ ! -x "$COMPOSE" ]] || [[ "$("$COMPOSE" --version 2>/dev/null | sed -n 's/^podman-compose version \(.*\)$/\1/p')" != "$COMPOSE_VERSION" ]]; then
  # its own small venv: the project's venv stays exactly requirements.lock
  step "podman-compose==$COMPOSE_VERSION into $STATE/venv"
  command -v python3 >/dev/null || { echo "need python3" >&2; exit 1; }
  python3 -m venv "$STATE/venv"
  "$STATE/venv/bin/pip" install -q --disable-pip-version-check "podman-compose==$COMPOSE_VERSION" 2>&1 | grep -v "is ignored: it is neither" >&2 || true
  [[ -x "$COMPOSE" ]] || { echo "podman-compose did not install" >&2; exit 1; }
fi
podman --version

# 2. the base image: a registry-free Debian made with debootstrap from the mirror this host uses
if ! podman image exists "$BASE"; then
  mirror="$(sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)"
  mirror="${mirror:-$(sed -n 's/^deb[[:space:]]\+\(http[^ ]*\).*/\1/p' /etc/apt/sources.list 2>/dev/null | head -1)}"
  [[ -n "$mirror" ]] || { echo "no Debian mirror found in /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list" >&2; exit 1; }
  rootfs="$(mktemp -d /var/tmp/sluicegate-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  step "debootstrap bookworm (minbase) from $mirror"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
  rm -f "$rootfs.log"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  # outbound HTTPS may go through an intercepting proxy: give the image this host's CA bundle
  mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/usr/local/share/ca-certificates"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  bundle=/etc/ssl/certs/ca-certificates.crt
  step "podman import $BASE"
  changes=(--change 'CMD ["/bin/bash"]' --change "ENV LANG=C.UTF-8")
  for var in SSL_CERT_FILE PIP_CERT REQUESTS_CA_BUNDLE; do changes+=(--change "ENV $var=$bundle"); done
  tar -C "$rootfs" -c . | podman import -q "${changes[@]}" - "$BASE" >/dev/null
  rm -rf "$rootfs"
  trap - EXIT
fi

# 3. the Python image: the lock installed once, shared by the servers and the worker. Rebuilt only
# when requirements.lock or its Dockerfile changes (their hash is a label). uv's cache and
# /opt/wheels (torch) are mounted into the build: wheels the host already has are not downloaded again.
# Every build uses the host's network: apt and pip inside RUN resolve names as the host does (a
# container on podman's bridge could not reach this host's resolver once netavark was in use).
lock_sha="$(cat "$ROOT/requirements.lock" "$ROOT/infra/Dockerfile.python" | sha256sum | cut -c1-64)"
have_sha="$(podman image inspect --format '{{index .Labels "sluicegate.lock-sha256"}}' "$PYIMG" 2>/dev/null || true)"
if [[ "$have_sha" != "$lock_sha" ]]; then
  uv="$ROOT/.venv/bin/uv"
  [[ -x "$uv" ]] || { echo "need $uv: run \`make install\` first" >&2; exit 1; }
  uv_cache="$("$uv" cache dir)"
  mkdir -p "$uv_cache"
  # torch==2.13.0+cpu: the wheel on this disk where present (mounted), else PyTorch's CPU index (as the Makefile)
  if compgen -G "/opt/wheels/torch-2.13.0+cpu-*.whl" >/dev/null; then
    wheels=(-v /opt/wheels:/opt/wheels:ro)
  else
    wheels=(--build-arg "TORCH_SOURCE=--extra-index-url https://download.pytorch.org/whl/cpu")
  fi
  ctx="$(mktemp -d /var/tmp/sluicegate-lock.XXXXXX)"
  trap 'rm -rf "$ctx" "$ctx.log"' EXIT
  cp "$ROOT/requirements.lock" "$ctx/"
  cp "$(readlink -f "$uv")" "$ctx/uv"
  step "build $PYIMG (lock ${lock_sha:0:12})"
  podman build --pull=never --network=host -q -f "$ROOT/infra/Dockerfile.python" --label "sluicegate.lock-sha256=$lock_sha" \
    -v "$uv_cache:/root/.cache/uv" "${wheels[@]}" \
    -t "$PYIMG" "$ctx" >"$ctx.log" 2>&1 || { tail -30 "$ctx.log" >&2; exit 1; }
  rm -rf "$ctx" "$ctx.log"
  trap - EXIT
  # the lock image this one replaces (untagged now)
  podman image prune -f --filter "label=sluicegate.lock-sha256" >/dev/null
fi

# 4. Postgres from Debian's packages (rebuilt when its Dockerfile or entrypoint changes)
pg_sha="$(cat "$ROOT/infra/Dockerfile.postgres" "$ROOT/infra/postgres/entrypoint.sh" | sha256sum | cut -c1-64)"
if [[ "$(podman image inspect --format '{{index .Labels "sluicegate.postgres-sha256"}}' "$PGIMG" 2>/dev/null || true)" != "$pg_sha" ]]; then
  step "build $PGIMG"
  podman build --pull=never --network=host -q -f "$ROOT/infra/Dockerfile.postgres" --label "sluicegate.postgres-sha256=$pg_sha" \
    -t "$PGIMG" "$ROOT/infra/postgres" >/dev/null
  podman image prune -f --filter "label=sluicegate.postgres-sha256" >/dev/null
fi

# 5. the worker: the checkout on top of the Python image (layer cache: only changed sources rebuild)
step "build $WORKER"
podman build --pull=never --network=host -q -f "$ROOT/infra/Dockerfile.worker" --ignorefile "$ROOT/infra/Dockerfile.worker.dockerignore" \
  -t "$WORKER" "$ROOT" >/dev/null
step "ready: $(podman images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep sluicegate- | tr '\n' ' ')"
