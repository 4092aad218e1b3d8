#!/usr/bin/env bash
# Prints the path of a chromium for the browser tier (make browser-test),
# installing Debian's chromium package with apt-get when it is missing
# (as root, or through sudo). FERRY_CHROMIUM names another binary.
set -euo pipefail
bin="${FERRY_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$bin" ] && "$bin" --version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  sudo="sudo"
fi
echo "installing chromium with apt-get (once)" >&2
$sudo apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2
"$bin" --version >&2
echo "$bin"
