#!/usr/bin/env bash
# Install the archive writers the dataset tests pack real uploads with (Info-ZIP, 7-Zip, bsdtar)
# when they are missing. The tests skip, naming the package, only where this could not install them.
set -uo pipefail

missing=()
need() {  # need DEBIAN_PACKAGE COMMAND...: the package, unless one of the commands is on PATH
  local package=$1
  shift
  for command in "$@"; do
    command -v "$command" >/dev/null 2>&1 && return 0
  done
  missing+=("$package")
}
need zip zip
need 7zip 7zz 7z  # Debian's 7zip ships `7zz`; other distributions name it `7z`
need libarchive-tools bsdtar

if [ "${#missing[@]}" -eq 0 ]; then
  echo "ensure-tools: zip, 7-Zip and bsdtar are installed"
  exit 0
fi

as_root=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "ensure-tools: not root: run apt-get install -y ${missing[*]}; until then the" \
      "archive-writer tests skip" >&2
    exit 0
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-tools: no apt-get: install ${missing[*]} (Debian names) by hand; until then the" \
    "archive-writer tests skip" >&2
  exit 0
fi

echo "ensure-tools: installing ${missing[*]}"
install() {  # waits for a dpkg lock another apt-get holds rather than failing at once
  "${as_root[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
    "${missing[@]}" >/dev/null
}
# A fresh image may have no package lists yet: refresh them once and try again.
install || { "${as_root[@]}" apt-get update -qq && install; } ||
  echo "ensure-tools: could not install ${missing[*]}; the archive-writer tests skip" >&2
exit 0
