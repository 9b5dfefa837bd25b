#!/bin/sh
# fetch-debs.sh DEST PACKAGE...: downloads the .deb files of PACKAGE... into DEST with the
# ordinary `apt-get download` (nothing is installed, no maintainer script runs).
# `mlambda base build` runs this when no --debs folder is given.
set -eu
dest="$1"
shift
mkdir -p "$dest"
cd "$dest"
# As root, apt hands the download to its unprivileged _apt user, which must be able to write here.
chmod 0777 . 2>/dev/null || true
if ! apt-get download "$@"; then
  echo "apt-get download failed: run 'apt-get update' (as root) and try again, or pass --debs DIR with the .deb files" >&2
  exit 1
fi
