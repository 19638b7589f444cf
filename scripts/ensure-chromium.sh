#!/usr/bin/env bash
# The browser the dashboard's tests drive (tests/test_dashboard_browser.py):
# Debian's chromium package, installed when missing.  Playwright downloads
# no browser of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure-chromium: chromium is missing; install it with: sudo apt-get install -y chromium" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
command -v chromium
