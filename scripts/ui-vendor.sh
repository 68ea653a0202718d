#!/usr/bin/env bash
# The console's third-party files (orchestrator/server/ui/vendor/), from the npm package pinned in
# orchestrator/server/ui/package-lock.json. They are committed, so that building the orchestrator
# needs neither npm nor a network.
#
#   scripts/ui-vendor.sh           fetch the pinned package and copy its files into vendor/
#   scripts/ui-vendor.sh --check   fail unless vendor/ holds exactly those files
#
# Only curl and tar: the tarball's address and sha512 come from the lock file, and the tarball is
# checked against that digest before anything is taken from it.
set -euo pipefail
cd "$(dirname "$0")/../orchestrator/server/ui"
mode=${1:-update}
read -r url integrity < <(python3 -c '
import json
lock = json.load(open("package-lock.json"))
package = lock["packages"]["node_modules/uplot"]
url = package.get("resolved") or "https://registry.npmjs.org/uplot/-/uplot-%s.tgz" % package["version"]
print(url, package["integrity"])
')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
curl --fail --silent --show-error --location --retry 3 -o "$work/package.tgz" "$url"
want=${integrity#sha512-}
got=$(openssl dgst -sha512 -binary "$work/package.tgz" | base64 -w0)
if [ "$got" != "$want" ]; then
    echo "ui-vendor: $url does not have the sha512 package-lock.json pins" >&2
    exit 1
fi
tar -xzf "$work/package.tgz" -C "$work"
# What the package calls each file, and what vendor/ calls it.
for pair in dist/uPlot.iife.min.js:uplot.min.js dist/uPlot.min.css:uplot.min.css LICENSE:uplot-LICENSE; do
    file=${pair%%:*} name=${pair##*:}
    if [ "$mode" = --check ]; then
        cmp -s "$work/package/$file" "vendor/$name" || { echo "ui-vendor: vendor/$name is not $file of $url; run scripts/ui-vendor.sh" >&2; exit 1; }
    else
        cp "$work/package/$file" "vendor/$name"
    fi
done
[ "$mode" = --check ] && echo "ui-vendor: vendor/ holds the pinned uPlot's files" >&2
exit 0
