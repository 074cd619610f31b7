# A "join" or "leave" whose members are all plain strings is read in place
# (ngx_chat_jflat), not by jansson: the same answers either way.  "history"
# given as a string is refused on both paths; as a number (jansson) it
# limits the replay.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;

plan tests => 10;

my $t = Test::Chat::Nginx->new(
    http => 'chat_zone chat 1m;',
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
_EOC_
);

sub next_of {
    my ($ws, @types) = @_;
    for (1 .. 10) {
        my $m = $ws->recv_json(3) or return undef;
        return $m if grep { $m->{type} eq $_ } @types;
    }
    return undef;
}

my $ann = $t->ws(path => '/chat?user=ann');
next_of($ann, 'welcome');

$ann->send_text('{"type":"join","room":"flat","history":"5","ref":"j1"}');
my $e = next_of($ann, 'error', 'joined');
is($e && $e->{code}, 'bad_request', 'history as a string: bad_request');
is($e && $e->{message}, '"history" must be a non-negative integer',
   'with the same message as jansson\'s path');
is($e && $e->{ref}, 'j1', 'and the ref');

$ann->send_text('{"type":"join","room":"flat","ref":"j2"}');
my $j = next_of($ann, 'joined', 'error');
is($j && $j->{type}, 'joined', 'a join of plain strings');
is($j && $j->{members}, 1, 'one member');

$ann->send_json({ type => 'send', room => 'flat', content => "m$_" })
    for 1 .. 3;
next_of($ann, 'ack') for 1 .. 3;

my $bob = $t->ws(path => '/chat?user=bob');
next_of($bob, 'welcome');
$bob->send_text('{"type":"join","room":"flat","history":1}');
my $h = next_of($bob, 'history');
is($h && $h->{type} eq 'history' && scalar @{ $h->{messages} }, 1,
   'history as a number (jansson): one message replayed');

$ann->send_text('{"type":"join","room":"fl\u0061t","ref":"j3"}');
$j = next_of($ann, 'joined', 'error');
ok($j && $j->{type} eq 'joined' && $j->{room} eq 'flat',
   'an escaped room name (jansson): the same room');

$ann->send_text('{"type":"leave","room":"flat","ref":"l1"}');
my $l = next_of($ann, 'left', 'error');
is($l && $l->{type}, 'left', 'a leave of plain strings');

$ann->send_text('{"type":"leave","room":"flat","ref":"l2"}');
$e = next_of($ann, 'error', 'left');
is($e && $e->{code}, 'not_member', 'left: a second leave is not_member');

ok($t->running, 'nginx still running');
