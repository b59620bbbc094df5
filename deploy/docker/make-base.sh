#!/usr/bin/env bash
# Make a Debian bookworm + python3 base image without pulling from any registry.
#
# Why: machines without registry access (CI sandboxes, air-gapped build hosts) cannot pull
# python:3.11-slim, but they can reach a Debian mirror. debootstrap builds a minimal root
# filesystem, `podman import` turns it into an image, and the Dockerfile takes it through
# `--build-arg BASE_IMAGE=...`. The tarball and the image are cached, so only the first run is slow.
#
# Usage: deploy/docker/make-base.sh [IMAGE_NAME]   (default localhost/seedlings-base:bookworm)
# Env:   SEEDLINGS_BASE_CACHE (default /var/tmp/seedlings-base), DEBIAN_MIRROR.
set -euo pipefail

image="${1:-localhost/seedlings-base:bookworm}"
cache="${SEEDLINGS_BASE_CACHE:-/var/tmp/seedlings-base}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tarball="$cache/bookworm-python3.tar"
podman=(podman --runtime runc)

if "${podman[@]}" image exists "$image"; then
  echo "make-base: $image already exists"
  exit 0
fi
for tool in debootstrap podman; do
  command -v "$tool" >/dev/null || { echo "make-base: $tool not found; apt-get install $tool" >&2; exit 1; }
done
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  root="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  echo "make-base: debootstrap bookworm into $root (a few minutes, once)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { echo "make-base: debootstrap failed; see $cache/debootstrap.log" >&2; exit 1; }
  # Slim the image the way the official slim images do: no apt lists, docs or man pages.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
"${podman[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' "$tarball" "$image" >/dev/null
echo "make-base: imported $image from $tarball"
