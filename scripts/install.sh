#!/usr/bin/env bash
# Install everything the bot, its sandbox and its tests need on a fresh Debian machine (as root).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: Prometheus (+promtool), Podman serving the Docker Engine API, busybox for images;
# jq and time for the trace lookup benchmark's baseline (grep -F | jq) and its peak memory.
# PostgreSQL (with pg_dump/pg_restore) and Redis are started by the machine itself.
need=()
for package in prometheus podman runc busybox-static catatonit jq time; do
  dpkg -s "$package" >/dev/null 2>&1 || need+=("$package")
done
if ((${#need[@]})); then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/chatops --help >/dev/null
