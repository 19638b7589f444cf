#!/usr/bin/env bash
# Vendor the dashboard's JavaScript from the npm registry: pinned versions,
# checked against the integrity recorded here, with their licences kept
# next to them.  The result is committed, so that installing ccx needs no
# network and serving it fetches nothing: run this only to change a version
# (then update the integrity below from `npm view PACKAGE@VERSION dist.integrity`).
set -euo pipefail
cd "$(dirname "$0")/.."

VENDOR=ccx/web/dashboard/static/vendor
# package  version  integrity  files to keep (from the package's root)  target dir
PACKAGES=(
  "@xterm/xterm 6.0.0 sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg== lib/xterm.js,css/xterm.css,LICENSE xterm"
  "@xterm/addon-fit 0.11.0 sha512-jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g== lib/addon-fit.js,LICENSE addon-fit"
)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  echo "# Vendored JavaScript"
  echo
  echo "Fetched from the npm registry by scripts/vendor-js.sh; do not edit by hand."
  echo
  echo "| package | version | licence | integrity |"
  echo "|---|---|---|---|"
} > "$work/VENDORED.md"
for entry in "${PACKAGES[@]}"; do
  read -r name version integrity files target <<< "$entry"
  tarball=$(cd "$work" && npm pack --silent "$name@$version")
  actual="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    echo "vendor-js: $name@$version: integrity $actual, expected $integrity" >&2
    exit 1
  fi
  mkdir -p "$work/$target"
  tar -xzf "$work/$tarball" -C "$work/$target"
  rm -rf "${VENDOR:?}/$target"
  mkdir -p "$VENDOR/$target"
  IFS=, read -r -a keep <<< "$files"
  for file in "${keep[@]}"; do
    cp "$work/$target/package/$file" "$VENDOR/$target/"
  done
  licence=$(node -e "console.log(require('$work/$target/package/package.json').license)")
  echo "| \`$name\` | $version | $licence (LICENSE) | \`$integrity\` |" >> "$work/VENDORED.md"
done
cp "$work/VENDORED.md" "$VENDOR/VENDORED.md"
echo "vendor-js: vendored into $VENDOR"
