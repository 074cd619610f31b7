# The zone's limits (SPEC §8): user ids are at most 256 bytes (400 beyond),
# an empty room costs the same whatever chat_history is (its ring grows
# with its messages), and "since"/"before" find ids in a ring that grew,
# wrapped and dropped its oldest messages.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;

plan tests => 16;

my $t = Test::Chat::Nginx->new(workers => 1, http => 'chat_zone chat 8m;',
                               server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 100000;
            chat_max_rooms 1000;
            chat_request_rate off;
        }
        location = /small {
            chat chat;
            chat_user $arg_user;
            chat_history 50;
            chat_request_rate off;
        }
_EOC_

# --- user ids ------------------------------------------------------------------

my $ws = $t->ws(path => '/chat?user=' . ('u' x 256));
ok($ws->ok, 'a 256-byte user id is accepted');
$ws->close;

$ws = $t->ws(path => '/chat?user=' . ('u' x 257));
is($ws->status, 400, 'a 257-byte user id gets 400');
like($t->error_log, qr/user id of 257 bytes, at most 256/,
     'and the log says why');

# --- thousands of empty rooms with chat_history 100000 -----------------------

sub client {
    my ($path, $user) = @_;
    my $c = $t->ws(path => "$path?user=$user");
    return undef unless $c->ok;
    my $w = $c->recv_json(3);
    return $w && $w->{type} eq 'welcome' ? $c : undef;
}

my $joined = 0;
for my $k (1 .. 3) {
    my $c = client('/chat', "roomer$k") or next;
    $c->send_raw(join '', map {
        $c->build_frame(opcode => 1,
                        payload => qq({"type":"join","room":"empty-$k-$_"}))
    } 1 .. 1000);
    for (1 .. 1000) {
        my $m = $c->recv_json(5) or last;
        $joined++ if $m->{type} eq 'joined';
    }
}
is($joined, 3000, '3,000 empty rooms joined in an 8m zone with chat_history 100000');

my $other = client('/chat', 'other');
$other->send_json({ type => 'join', room => 'mine' });
my $j = $other->recv_json(3);
is($j && $j->{type}, 'joined', "and another user's join still succeeds");

# --- the ring grows, wraps, and its ids are found ----------------------------

# the next frame of this type (acks and messages come in between)
sub next_of {
    my ($c, $type) = @_;
    for (1 .. 500) {
        my $m = $c->recv_json(3) or return {};
        return $m if $m->{type} eq $type;
    }
    return {};
}

my $a = client('/small', 'alice');
$a->send_json({ type => 'join', room => 'ring' });
$a->recv_json(3);

my @ids;
$a->send_raw(join '', map {
    $a->build_frame(opcode => 1,
                    payload => qq({"type":"send","room":"ring","content":"m$_"}))
} 1 .. 120);
while (@ids < 120) {
    my $m = $a->recv_json(5) or last;
    push @ids, $m->{id} if $m->{type} eq 'message';
}
is(scalar @ids, 120, '120 messages in a room of chat_history 50');

$a->send_json({ type => 'history', room => 'ring', limit => 5,
                before => $ids[99] });
my $h = next_of($a, 'history');
is_deeply([ map { $_->{content} } @{ $h->{messages} || [] } ],
          [ map { "m$_" } 95 .. 99 ], 'history before m100: m95..m99');
ok($h->{complete}, 'complete');

$a->send_json({ type => 'history', room => 'ring', limit => 50,
                before => $ids[71] });
$h = next_of($a, 'history');
is_deeply([ map { $_->{content} } @{ $h->{messages} || [] } ],
          [ map { "m$_" } 71 .. 71 ], 'history before the oldest but one: '
                                    . 'the oldest (m71)');
ok(!$h->{complete}, 'not complete: older ones are gone');

$a->send_json({ type => 'history', room => 'ring', limit => 5,
                before => $ids[9] });
$h = next_of($a, 'history');
is(scalar @{ $h->{messages} || [] }, 0, 'before an evicted id: nothing');
ok(!$h->{complete}, 'and not complete');

my $b = client('/small', 'bob');
$b->send_json({ type => 'join', room => 'ring', since => $ids[109] });
$h = next_of($b, 'history');
is_deeply([ map { $_->{content} } @{ $h->{messages} || [] } ],
          [ map { "m$_" } 111 .. 120 ], 'join since m110: m111..m120');
ok($h->{complete}, 'complete');

my $c = client('/small', 'carol');
$c->send_json({ type => 'join', room => 'ring', since => $ids[50] });
$h = next_of($c, 'history');
is(scalar @{ $h->{messages} || [] }, 50,
   'join since an evicted id: the whole ring (50)');
ok(!$h->{complete}, 'not complete');
