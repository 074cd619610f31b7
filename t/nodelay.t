# Frames are not held back by Nagle's algorithm (SPEC §5 delivery): two
# members talk in turns, each answering the other's message as it arrives.
# A frame the worker writes while the previous one to that client is not
# yet acknowledged must go out at once: with Nagle's algorithm it waited
# for the client's delayed ACK (up to 40 ms on Linux) and every turn took
# that long.  "tcp_nodelay off;" restores the old behaviour, and the test
# checks that too, so it cannot pass for another reason.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(now client join_room send_json take);

plan tests => 6;

use constant TURNS => 30;

my $t = Test::Chat::Nginx->new(workers => 1, conf => <<'_EOC_');
events { worker_connections 64; }
http {
    chat_zone chat 1m;
    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 0;
        }
        location = /nagle {
            chat chat;
            chat_user $arg_user;
            chat_history 0;
            tcp_nodelay off;
        }
    }
}
_EOC_

# the median time of a turn: one member sends, the other takes the message
# and answers at once; undef if a message did not come
sub turns {
    my ($path, $tag) = @_;
    my @c = map { client($t, "$tag$_", ws => { path => "$path?user=$tag$_" }) }
            0 .. 1;
    for my $c (@c) {
        return undef unless $c->{ws}->ok && join_room($c, "talk-$tag");
    }
    my @took;
    for my $i (1 .. TURNS) {
        my ($from, $to) = @c[ $i % 2, 1 - $i % 2 ];
        my $t0 = now();
        send_json($from, type => 'send', room => "talk-$tag",
                  content => "turn $i", ref => "r$i");
        my $m = take($to, sub { $_[0]{type} eq 'message'
                                && $_[0]{content} eq "turn $i" }, 3);
        return undef unless $m;
        push @took, now() - $t0;
    }
    @took = sort { $a <=> $b } @took;
    return $took[ @took / 2 ];
}

my $fast = turns('/chat', 'nd');
ok(defined $fast, 'every turn delivered (tcp_nodelay on, the default)');
cmp_ok($fast // 9, '<', 0.015,
       'a turn takes well under a delayed ACK (median)');
diag(sprintf 'median turn: %.2f ms with TCP_NODELAY', 1000 * ($fast // 9));

my $slow = turns('/nagle', 'ng');
ok(defined $slow, 'every turn delivered (tcp_nodelay off)');
cmp_ok($slow // 0, '>', 0.015,
       'with "tcp_nodelay off", turns wait for delayed ACKs (the old way)');
diag(sprintf 'median turn: %.2f ms with Nagle', 1000 * ($slow // 0));

$t->stop;
my $log = $t->error_log;
unlike($log, qr/\[(alert|crit|emerg)\]/, 'no alerts');
unlike($log, qr/TCP_NODELAY/, 'no setsockopt failure logged');
