#!/usr/bin/env bash
# Installs the Debian package (make deb), checks it the way an operator
# uses it, and purges it again:
#
#   - dpkg -i enables the module (/etc/nginx/modules-enabled/ links the
#     load_module snippet in /usr/share/nginx/modules-available/);
#   - the system configuration passes nginx -t with it loaded;
#   - an nginx with the system layout (its modules-enabled include, the
#     module from /usr/lib/nginx/modules) serves one chat message: welcome,
#     join, send, ack and the message back;
#   - dpkg --purge leaves none of the package's files nor the link.
#
# Needs root and changes the system: meant for CI (.ci/run) and throw-away
# machines.  Usage: scripts/deb-check.sh build/deb/libnginx-mod-http-chat_*.deb
set -euo pipefail

deb=${1:?usage: $0 libnginx-mod-http-chat_VERSION_ARCH.deb}
pkg=libnginx-mod-http-chat
link=/etc/nginx/modules-enabled/50-mod-http-chat.conf
cd "$(dirname "$0")/.."

fail() { echo "deb-check: FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "must run as root (it installs a package)"

tmp=$(mktemp -d /tmp/chat-deb-XXXXXX)
pid=
cleanup() {
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid"; sleep 0.5
    fi
    rm -rf "$tmp"
    dpkg --purge "$pkg" >/dev/null 2>&1 || true
    rm -f /usr/sbin/policy-rc.d
}
trap cleanup EXIT

# the package must not start or reload a system nginx on this machine
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d

dpkg -i "$deb"

dpkg -s "$pkg" | grep -q '^Status: install ok installed' || fail "not installed"
[ -L "$link" ] || fail "$link missing"
[ "$(readlink -f "$link")" = /usr/share/nginx/modules-available/mod-http-chat.conf ] \
    || fail "$link points to $(readlink "$link")"
[ -f /usr/lib/nginx/modules/ngx_chat_module.so ] || fail "module not installed"
echo "deb-check: installed, enabled through $link"

# the system configuration with the module loaded
nginx -t -q || fail "nginx -t on the system configuration"
echo "deb-check: nginx -t passes with the module enabled"

# an nginx of the system layout with a chat location
port=$(perl -MIO::Socket::INET -e \
    'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1")->sockport')
mkdir -p "$tmp/logs"
cat > "$tmp/nginx.conf" <<CONF
include /etc/nginx/modules-enabled/*.conf;
daemon off;
pid $tmp/nginx.pid;
error_log $tmp/logs/error.log info;
worker_processes 2;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $tmp;
    proxy_temp_path $tmp;
    fastcgi_temp_path $tmp;
    uwsgi_temp_path $tmp;
    scgi_temp_path $tmp;
    chat_zone chat 1m;
    server {
        listen 127.0.0.1:$port;
        location = /chat { chat chat; chat_user \$arg_user; }
    }
}
CONF

nginx -t -q -c "$tmp/nginx.conf" || fail "nginx -t on the chat configuration"
nginx -c "$tmp/nginx.conf" &
pid=$!

perl -It/lib -MTest::Chat::WS -e '
    my $port = shift;
    my $ws;
    for (1 .. 50) {
        $ws = Test::Chat::WS->connect(port => $port, path => "/chat?user=deb");
        last if $ws->ok;
        select(undef, undef, undef, 0.1);
    }
    die "no upgrade: " . ($ws->error // "") . "\n" unless $ws->ok;
    my $w = $ws->recv_json(3);
    die "no welcome\n" unless $w && $w->{type} eq "welcome";
    $ws->send_json({ type => "join", room => "deb" });
    my $j = $ws->recv_until(sub { $_[0]{type} eq "joined" }, 3)
        or die "no joined\n";
    $ws->send_json({ type => "send", room => "deb", content => "from the package", ref => "1" });
    my ($ack, $msg);
    for (1 .. 4) {
        my $f = $ws->recv_json(3) or last;
        $ack = $f if $f->{type} eq "ack";
        $msg = $f if $f->{type} eq "message";
        last if $ack && $msg;
    }
    die "no ack\n" unless $ack;
    die "no message back\n" unless $msg && $msg->{content} eq "from the package";
    print "deb-check: one message through the packaged module: id $msg->{id}\n";
' "$port" || fail "chat through the packaged module"

kill "$pid"; wait "$pid" 2>/dev/null || true
pid=

# purge: nothing of the package is left
files=$(dpkg -L "$pkg" | while read -r f; do [ -d "$f" ] || echo "$f"; done)
dpkg --purge "$pkg"
dpkg -s "$pkg" >/dev/null 2>&1 && fail "still known to dpkg after purge"
left=
for f in $files "$link"; do
    if [ -e "$f" ] || [ -L "$f" ]; then left="$left $f"; fi
done
[ -z "$left" ] || fail "left after purge:$left"
nginx -t -q || fail "nginx -t after purge"
echo "deb-check: purged, nothing left; nginx -t passes"
