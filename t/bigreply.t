# Replies to a client's own request (a history reply can be large) are not
# held to chat_send_buffer like live traffic: a join with history bigger
# than the send buffer is answered, and the connection stays open.

use strict;
use warnings;
use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;

plan tests => 7;

my $t = Test::Chat::Nginx->new(
    http   => 'chat_zone chat 1m;',
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_send_buffer 8k;
            chat_history 100;
        }
_EOC_
    workers => 1,
);

my $a = $t->ws(path => '/chat?user=ann');
ok($a && $a->ok, 'ann connected');
$a->recv_json(2);                                   # welcome
$a->send_json({ type => 'join', room => 'r' });
$a->recv_until(sub { $_[0]{type} eq 'joined' }, 2);

for my $i (1 .. 5) {
    $a->send_json({ type => 'send', room => 'r', content => ('x' x 2000) . $i,
                    ref => "s$i" });
    $a->recv_until(sub { $_[0]{type} eq 'ack' }, 2);
}

my $b = $t->ws(path => '/chat?user=bob');
ok($b && $b->ok, 'bob connected');
$b->recv_json(2);                                   # welcome
$b->send_json({ type => 'join', room => 'r', history => 5 });

my $j = $b->recv_json(2);
is($j && $j->{type}, 'joined', 'joined');
my $h = $b->recv_json(2);
is($h && $h->{type}, 'history', 'a history reply larger than the send buffer');
is($h && scalar @{ $h->{messages} }, 5, 'with the 5 messages');

$b->send_json({ type => 'who', room => 'r' });
my $w = $b->recv_until(sub { $_[0]{type} eq 'who' }, 2);
ok($w && !$b->eof, 'the connection is still open');

my $log = $t->error_log;
unlike($log, qr/reads too slowly/, 'nobody was closed as a slow reader');

undef $t;
