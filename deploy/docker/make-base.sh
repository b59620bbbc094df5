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
# Bump when the recipe below changes: an image or tarball of another version is made again.
version=3
tarball="$cache/bookworm-python3-v$version.tar"
podman=(podman --runtime runc)

if "${podman[@]}" image exists "$image" \
   && [ "$("${podman[@]}" image inspect --format '{{index .Config.Labels "seedlings.base.version"}}' "$image")" = "$version" ]; then
  echo "make-base: $image (version $version) already exists"
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
  # Slim the image the way the official slim images do: no apt lists or package cache (debootstrap leaves
  # every .deb it installed in /var/cache/apt/archives: 45 MB), docs, man pages or translations (33 MB).
  # Nor glibc's iconv converters for legacy character sets (gconv, 9 MB): UTF-8, ASCII and Latin-1 are built
  # into glibc, and Python converts with its own codecs.
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log \
    "$root"/usr/lib/*-linux-gnu/gconv
  find "$root"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  find "$cache" -maxdepth 1 -name 'bookworm-python3*.tar' ! -name "${tarball##*/}" -delete  # older recipes'
fi
"${podman[@]}" import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' \
  --change "LABEL seedlings.base.version=$version" "$tarball" "$image" >/dev/null
echo "make-base: imported $image from $tarball"
