#!/usr/bin/env bash
# Runs the browser end-to-end test t/e2e/chat.e2e.js (headless Chromium,
# nginx with the module on 127.0.0.1:${E2E_PORT:-18089}); installs its one
# dependency (playwright-core, from package-lock.json) first if needed.
# Exits 0 only when every check passed.
set -euo pipefail

cd "$(dirname "$0")"

# a sanitizer runtime preloaded for nginx (make test-asan) is for nginx
# only: node, npm and chromium run without it, chat.e2e.js hands it to nginx
if [ -n "${LD_PRELOAD:-}" ]; then
    export E2E_NGINX_LD_PRELOAD="${E2E_NGINX_LD_PRELOAD:-$LD_PRELOAD}"
    unset LD_PRELOAD
fi

if [ ! -d node_modules/playwright-core ]; then
    echo "t/e2e: installing playwright-core (npm ci)" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
fi

out=$(mktemp "${TMPDIR:-/tmp}/ngx-chat-e2e-out.XXXXXX")
trap 'rm -f "$out"' EXIT

rc=0
node chat.e2e.js "$@" | tee "$out" || rc=$?

# belt and braces: the summary line must be there and say 0 failed
last=$(tail -n 1 "$out")

if [ "$rc" -eq 0 ] && [[ "$last" =~ ^[0-9]+\ passed,\ 0\ failed$ ]] \
   && [[ ! "$last" =~ ^0\ passed ]]
then
    exit 0
fi

echo "t/e2e: FAILED (exit status $rc, last line: $last)" >&2
exit 1
