#!/bin/sh
# fetch-debs.sh DEST PACKAGE...: downloads the .deb files of PACKAGE... into DEST with the
# ordinary `apt-get download` (nothing is installed, no maintainer script runs).
# `mlambda base build` runs this when no --debs folder is given. With MLAMBDA_DEB_CACHE set, a
# .deb already there whose SHA256 is the one apt wants now is copied instead of downloaded, and
# what is downloaded is kept there (CI sets it: each test's runtime needs the same packages).
set -eu
dest="$1"
shift
mkdir -p "$dest"
cd "$dest"
# As root, apt hands the download to its unprivileged _apt user, which must be able to write here.
chmod 0777 . 2>/dev/null || true
failed() {
  echo "apt-get download failed: run 'apt-get update' (as root) and try again, or pass --debs DIR with the .deb files" >&2
  exit 1
}
cache="${MLAMBDA_DEB_CACHE:-}"
if [ -z "$cache" ]; then
  apt-get download "$@" || failed
  exit 0
fi
mkdir -p "$cache"
uris=$(apt-get download --print-uris "$@") || failed
missing=""
for line in $(echo "$uris" | awk '{print $2 "|" $4}'); do
  file="${line%%|*}"
  want="${line#*|SHA256:}"
  if [ -f "$cache/$file" ] && echo "$want  $cache/$file" | sha256sum -c --status; then
    cp "$cache/$file" .
  else
    missing="$missing ${file%%_*}"
  fi
done
if [ -n "$missing" ]; then
  # shellcheck disable=SC2086 # one word per package
  apt-get download $missing || failed
  for deb in *.deb; do
    [ -f "$cache/$deb" ] && continue
    cp "$deb" "$cache/.$deb.$$" && mv "$cache/.$deb.$$" "$cache/$deb"
  done
fi
