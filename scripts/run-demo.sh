#!/usr/bin/env bash
# Runs the demo chat server in the foreground on 127.0.0.1:8080
# (conf-examples/chat.conf; Ctrl-C stops it).  Open http://127.0.0.1:8080/
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p build/demo/logs
echo "chat demo: http://127.0.0.1:8080/  (WebSocket ws://127.0.0.1:8080/chat?user=NAME,"
echo "           status http://127.0.0.1:8080/chat/status); Ctrl-C stops it"
exec nginx -p "$PWD/" -c conf-examples/chat.conf -g 'daemon off;'
