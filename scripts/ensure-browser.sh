#!/bin/sh
# The browser tests drive Debian's Chromium (Playwright's own browser download does not work on
# the build machines). Install it when it is missing; root installs directly, others via sudo.
set -eu
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "ensure-browser: /usr/bin/chromium is missing and this user cannot install it;" \
         "run 'apt-get install -y chromium' as root (the browser tests need it)." >&2
    exit 1
fi
echo "ensure-browser: installing chromium"
# A stale package index names versions the mirror no longer has: refresh it and try again.
$as_root apt-get install -y chromium || { $as_root apt-get update && $as_root apt-get install -y chromium; }
