#!/usr/bin/env bash
# Builds the GPU machine's bundle (.device/) with ../shared/device/make-bundle.sh, leaving out of node_modules the
# packages only development here needs (the compiler, the VS Code packaging and test tools, the webview
# libraries that dist/ and media/dist/ already bundle): 7 parts instead of ~10, one device call each.
#   bash bench/device-bundle.sh            then issue the printed `run` calls back to back (docs/GPU.md)
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
src=${MAKE_BUNDLE:-../shared/device/make-bundle.sh}
[ -f "$src" ] || { echo "no $src: the bundle script comes with the development set-up's ../shared" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$src" "$(dirname "$src")/unpack.sh" "$tmp/"
excludes=""
for p in typescript @azure @vscode playwright-core @typespec @secretlint azure-devops-node-api chart.js @vscode-elements @types; do
  excludes+=" --exclude='node_modules/$p'"
done
# make-bundle.sh's node_modules tar takes its --exclude options before the paths: add ours next to them.
sed -i "s|--exclude='node_modules/.cache'|--exclude='node_modules/.cache'$excludes|" "$tmp/make-bundle.sh"
grep -q "node_modules/typescript" "$tmp/make-bundle.sh" || { echo "make-bundle.sh changed: the excludes did not go in" >&2; exit 2; }
bash "$tmp/make-bundle.sh" dist "$@"
