#!/usr/bin/env bash
# Installs every Debian 12 package needed to build the module and run the
# demo; with --test also what the test suite needs.  Idempotent.
set -euo pipefail

# libssl-dev: OpenSSL's libcrypto verifies chat_jwt tokens; zlib1g-dev:
# permessage-deflate
pkgs=(gcc make nginx nginx-dev libjansson-dev libhiredis-dev libpq-dev
      libssl-dev zlib1g-dev curl)

if [ "${1:-}" = "--test" ]; then
    # JSON::PP, Digest::SHA and Test::More come with perl itself;
    # t/tls.t needs IO::Socket::SSL, openssl (a throw-away certificate) and
    # curl with HTTP/2 (already in the list above)
    pkgs+=(perl libtest-base-perl clang libclang-rt-14-dev chromium
           redis-server postgresql libio-socket-ssl-perl openssl)

    # make deb / make deb-check (CI builds and installs the package)
    pkgs+=(debhelper dpkg-dev)

    # what the real Test::Nginx (CPAN, or ../shared/test-nginx) needs on
    # top of libtest-base-perl: make test-real, and the second run of .ci/run
    pkgs+=(libipc-run-perl libwww-perl liburi-perl liblist-moreutils-perl
           libtext-diff-perl libtest-longstring-perl)

    # Node.js for the browser test: Debian's, unless one (with npm) is
    # already installed, which Debian's npm package would conflict with
    if ! command -v npm >/dev/null 2>&1; then
        pkgs+=(nodejs npm)
    fi
fi

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" \
        || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # the Debian nginx package must not start a system nginx for us
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends "${missing[@]}"
    $SUDO rm -f /usr/sbin/policy-rc.d
fi

if [ "${1:-}" = "--test" ] && [ -f t/e2e/package.json ] \
   && { [ ! -d t/e2e/node_modules/playwright-core ] \
        || [ ! -d t/e2e/node_modules/ws ]; }; then
    (cd t/e2e && npm install --no-audit --no-fund --silent)
fi

# the client library's tests (t/client-js.t): the ws and typescript
# packages, from clients/js/package-lock.json
if [ "${1:-}" = "--test" ] && [ -f clients/js/package-lock.json ] \
   && { [ ! -d clients/js/node_modules/ws ] \
        || [ ! -d clients/js/node_modules/typescript ]; }; then
    (cd clients/js && npm ci --no-audit --no-fund --silent)
fi
