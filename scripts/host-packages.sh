#!/usr/bin/env bash
# Installs the host's Debian packages and starts the Docker engine (no systemd on the host).
# Idempotent: safe to run on every `make setup`.
set -euo pipefail
# openjdk-17-jdk-headless: javac for the JVM scorer jar (scripts/build-jar.sh); nodes need only the JRE.
# openssh-client: ansible-playbook and the Ansible test reach nodes over SSH (ssh, ssh-keygen).
pkgs=(docker.io nfdump debootstrap chromium openjdk-17-jdk-headless maven curl procps openssh-client)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (dockerd >/var/log/dockerd.log 2>&1 &)
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start: see /var/log/dockerd.log" >&2; exit 1; }
fi
