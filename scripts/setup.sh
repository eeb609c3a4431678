#!/usr/bin/env bash
# Installs what taskward needs on a Debian/Ubuntu machine: etcd, redis-cli and openssl (the tests make
# their own TLS certificates), docker.io, docker-compose and debootstrap (the container testbed) and
# chromium (the docs page and the dashboard are tested in it, headless, driven by Playwright without any browser
# download) from the OS, and the package with its test tools into ./.venv.
# Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
command -v openssl >/dev/null || missing+=(openssl)  # the tests make their own TLS certificates (etcd, nodes)
command -v curl >/dev/null || missing+=(curl)  # the TLS tests call REST with curl --cacert
# the docker-compose testbed's tests start their own engine and build the image from Debian packages
[[ -x /usr/sbin/dockerd ]] || missing+=(docker.io)
[[ -x /usr/bin/docker-compose ]] || missing+=(docker-compose)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || missing+=(debootstrap)
command -v chromium >/dev/null || missing+=(chromium)  # the tests render /docs and drive /ui in headless Chromium
[[ -x .venv/bin/python ]] || python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  echo "setup: installing from the OS: ${missing[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "setup: etcd, redis-cli, openssl, curl, docker.io, docker-compose, debootstrap and chromium are installed"
fi

[[ -x .venv/bin/python ]] || { echo "setup: creating .venv"; python3 -m venv .venv; }
echo "setup: installing taskward and its test tools into .venv (pip install -e '.[test]')"
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[test]'
echo "setup: done. Next: .venv/bin/taskward demo   (or put it on PATH: export PATH=\"$PWD/.venv/bin:\$PATH\")"
