#!/usr/bin/env bash
# Makes the Dockerfile buildable where no image registry or package index is reachable:
#   1. the base image it names (python:3.11-slim-bookworm by default), built locally from Debian
#      packages (debootstrap: bookworm minbase with python3, venv, etcd) and docker-import'ed under
#      that tag, so the Dockerfile builds unchanged;
#   2. wheels of taskward and everything it needs, built on this host into docker/wheels/, which the
#      build installs from with --no-index.
# Uses the DOCKER_HOST in its environment. Safe to run again: an existing base image is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${TASKWARD_BASE_IMAGE:-python:3.11-slim-bookworm}
DOCKER=${DOCKER:-/usr/bin/docker}   # Debian's client; a newer one may shadow it in /usr/local/bin
PYTHON=${PYTHON:-python3}
mirror() {  # the Debian mirror apt already uses here
  local uri
  uri=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | grep -v security | head -n1 || true)
  [[ -n "$uri" ]] || uri=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  echo "${uri:-http://deb.debian.org/debian}"
}

if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  root=$(mktemp -d /var/tmp/taskward-rootfs.XXXXXX)
  trap 'rm -rf "$root"' EXIT
  echo "building base image $BASE from Debian packages ($(mirror))" >&2
  debootstrap --variant=minbase --include=python3,python3-venv,etcd-server,etcd-client,ca-certificates \
    bookworm "$root" "$(mirror)" >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . |
    "$DOCKER" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["python3"]' - "$BASE" >/dev/null
fi

if ! ls docker/wheels/taskward-*.whl >/dev/null 2>&1 || [[ -n "$(find node coordinator proto pyproject.toml \
     -newer "$(ls -t docker/wheels/taskward-*.whl | head -n1)" -print -quit)" ]]; then
  rm -f docker/wheels/*.whl
  "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir docker/wheels . 'setuptools>=77' wheel
fi
echo "ready: $BASE and $(ls docker/wheels/*.whl | wc -l) wheels in docker/wheels/" >&2
