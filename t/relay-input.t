# What arrives from Redis is validated like client input (SPEC §8, "The
# relay"): forged payloads PUBLISHed on a server's channels (invalid UTF-8,
# trailing garbage, any departure from the shape of a "message" object, a
# message over chat_max_message_size, bad ids, presence events with an
# empty or invalid user, bad headers) reach no member and no later join's
# history; they are counted (relay_invalid in chat_status, JSON and
# Prometheus) and logged at most about once a second, the lines together
# accounting for every one.  A well-formed message from a server id never
# heard before is delivered (the relay's trust model), and what members
# and the ring get is the server's own serialisation of it.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET ();
use IO::Select ();
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status);
use Test::Chat::Redis;

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 19;

my $JSON = JSON::PP->new->utf8;
my $SID = '00000000deadbeef';          # a server nobody has heard of
my $ROOM = 'room';

# PUBLISH over RESP, binary-safe (NUL bytes too), pipelined; returns the
# receiver counts
sub publish_raw {
    my ($redis, @pairs) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $redis->port, Proto => 'tcp',
                                  Timeout => 3)
        or die "redis: $!";
    binmode $s;
    my $out = '';
    for my $p (@pairs) {
        my @a = ('PUBLISH', @$p);
        $out .= '*' . @a . "\r\n"
              . join('', map { '$' . length($_) . "\r\n$_\r\n" } @a);
    }
    my $off = 0;
    while ($off < length $out) {
        my $n = syswrite($s, $out, length($out) - $off, $off);
        die "redis: write: $!" unless defined $n;
        $off += $n;
    }
    my ($buf, @n) = ('');
    my $sel = IO::Select->new($s);
    my $deadline = now() + 5;
    while (@n < @pairs && now() < $deadline) {
        last unless $sel->can_read($deadline - now());
        sysread($s, $buf, 65536, length $buf) or last;
        push @n, $1 while $buf =~ s/^:(\d+)\r\n//;
        die "redis: $buf" if $buf =~ /^-/;
    }
    close $s;
    return @n;
}

# every frame that arrives within $quiet seconds of the last one (at most
# $max seconds): { opcode, payload }
sub frames {
    my ($ws, $quiet, $max) = @_;
    my $end = now() + $max;
    my @f;
    while (now() < $end) {
        my $m = $ws->recv_message(timeout => $quiet);
        last unless $m;
        push @f, $m;
    }
    return @f;
}

sub decode {
    my $p = shift;
    my $j = eval { $JSON->decode($p) };
    return ref $j eq 'HASH' ? $j : undef;
}

my $redis = Test::Chat::Redis->start;

my $t = Test::Chat::Nginx->new(
    http => "chat_zone chat 1m;\n    chat_redis " . $redis->url . ';',
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_max_message_size 1k;
            chat_history 50;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
    workers => 2,
);

ok(poll(5, sub { (status($t)->{redis} // '') eq 'up' }), 'relay up');

my $m1 = $t->ws(path => '/chat?user=m1');
my $w = $m1->recv_json(3);
ok($w && $w->{type} eq 'welcome', 'm1 connected');
$m1->send_json({ type => 'join', room => $ROOM });
ok($m1->recv_until(sub { $_[0]{type} eq 'joined' }, 3), 'm1 joined');

my ($channel, $servers);
poll(5, sub {
    ($channel) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', "*:r:$ROOM");
    ($servers) = grep { length } $redis->cli('PUBSUB', 'CHANNELS', '*:servers');
    defined $channel && defined $servers;
});
ok(defined $channel && defined $servers,
   'the server subscribed to the room and the servers channel')
    or diag('channels: ' . join ' ', $redis->cli('PUBSUB', 'CHANNELS'));
$channel //= "chat:0:chat:r:$ROOM";
$servers //= 'chat:0:chat:servers';

# --- forged payloads -------------------------------------------------------------

my $ID = '1700000000001-0000deadbeef';

sub msg {
    my (%o) = @_;
    my %f = (type => '"message"', room => qq("$ROOM"), id => qq("$ID"),
             user => '"eve"', content => '"hello"', ts => '1700000000001');
    for (keys %o) { defined $o{$_} ? ($f{$_} = $o{$_}) : delete $f{$_} }
    my @k = grep { exists $f{$_} } qw(type room id user content ts);
    push @k, grep { !/^(?:type|room|id|user|content|ts)$/ } sort keys %f;
    return '{' . join(',', map { qq("$_":$f{$_}) } @k) . '}';
}

sub m_payload { my ($id, $json) = @_; return "$SID M $id $json" }

my @invalid = (
    # [what, channel, payload]
    ['invalid UTF-8 in content', $channel, m_payload($ID, msg(content => qq("\xff\xfe")))],
    ['overlong UTF-8 in user', $channel, m_payload($ID, msg(user => qq("\xc0\xaf")))],
    ['trailing garbage', $channel, m_payload($ID, msg() . 'garbage')],
    ['two objects', $channel, m_payload($ID, msg() . msg())],
    ['a fake "admin" member', $channel, m_payload($ID, msg(user => '"admin"', admin => 'true'))],
    ['a duplicate member', $channel, m_payload($ID, msg() =~ s/\}$/,"user":"admin"}/r)],
    ['no ts', $channel, m_payload($ID, msg(ts => undef))],
    ['ts a string', $channel, m_payload($ID, msg(ts => '"1"'))],
    ['ts negative', $channel, m_payload($ID, msg(ts => '-1'))],
    ['ts a fraction', $channel, m_payload($ID, msg(ts => '1.5'))],
    ['type presence', $channel, m_payload($ID, msg(type => '"presence"'))],
    ['no type', $channel, m_payload($ID, msg(type => undef))],
    ['another room', $channel, m_payload($ID, msg(room => '"other"'))],
    ['an id other than the payload id', $channel, m_payload($ID, msg(id => '"1-0000deadbeef"'))],
    ['an empty user', $channel, m_payload($ID, msg(user => '""'))],
    ['a user of 257 bytes', $channel, m_payload($ID, msg(user => '"' . ('u' x 257) . '"'))],
    ['a user holding U+0000', $channel, m_payload($ID, msg(user => '"e\u0000ve"'))],
    ['a raw NUL byte in content', $channel, m_payload($ID, msg(content => qq("a\0b")))],
    ['a lone surrogate in content', $channel, m_payload($ID, msg(content => '"\ud800"'))],
    ['content a number', $channel, m_payload($ID, msg(content => '5'))],
    ['user an object', $channel, m_payload($ID, msg(user => '{"name":"eve"}'))],
    ['not an object', $channel, m_payload($ID, '["message"]')],
    ['content over chat_max_message_size', $channel, m_payload($ID, msg(content => '"' . ('x' x 1025) . '"'))],
    ['a payload far over any message', $channel, m_payload($ID, msg(content => '"' . ('x' x 20000) . '"'))],
    ['no JSON', $channel, "$SID M $ID"],
    ['an empty id', $channel, "$SID M  " . msg(id => '""')],
    ['an id of letters', $channel, m_payload('abc', msg(id => '"abc"'))],
    ['an id with 13 hex digits', $channel, m_payload('123-0000deadbeef0', msg(id => '"123-0000deadbeef0"'))],
    ['an id with upper case hex', $channel, m_payload('123-0000DEADBEEF', msg(id => '"123-0000DEADBEEF"'))],
    ['an id of 39 digits', $channel, m_payload('9' x 39, msg(id => '"' . ('9' x 39) . '"'))],
    ['an id of 21 digits', $channel, m_payload('1' x 21, msg(id => '"' . ('1' x 21) . '"'))],
    ['presence join without a user', $channel, "$SID J"],
    ['presence join with an empty user', $channel, "$SID J "],
    ['presence join with invalid UTF-8', $channel, "$SID J \xff\xfeeve"],
    ['presence join with a user of 257 bytes', $channel, "$SID J " . ('u' x 257)],
    ['presence leave with a NUL byte', $channel, "$SID L m1\0x"],
    ['an unknown kind', $channel, "$SID X something"],
    ['no space after the server id', $channel, "${SID}M $ID " . msg()],
    ['an upper case server id', $channel, uc($SID) . " M $ID " . msg()],
    ['a sync request with an argument', $channel, "$SID S x"],
    ['a short header', $channel, 'deadbeef M'],
    ['a heartbeat with an argument', $servers, "$SID H x"],
    ['a message on the servers channel', $servers, m_payload($ID, msg())],
);

my $t_first = now();
my @n = publish_raw($redis, map { [ $_->[1], $_->[2] ] } @invalid);
my @missed = map { $invalid[$_][0] } grep { !$n[$_] } 0 .. $#invalid;
ok(@n == @invalid && !@missed, scalar(@invalid) . ' forged payloads PUBLISHed, each heard by the server')
    or diag("not heard: @missed");

# two more with redis-cli itself, as an operator would try it
my $cli_admin = m_payload($ID, msg(user => '"admin"', content => '"I am root"', role => '"admin"'));
my $cli_garbage = m_payload($ID, msg(content => '"hi"') . ' }trailing');
is(join(',', map { ($redis->cli('PUBLISH', $channel, $_))[0] // '' } $cli_admin, $cli_garbage),
   '1,1', 'two more forged with redis-cli PUBLISH');
my $n_invalid = @invalid + 2;
my $t_last = now();

# well-formed messages from that unknown server: delivered, as ours
my $ID2 = '1700000000002-0000deadbeef';
my $canon1 = msg(content => '"forged but well-formed"');
my $odd = qq({ "ts" : 1700000000002, "content":"caf\\u00e9 \\/ \\"q\\"",\n)
        . qq( "user":"\\u0065ve", "id":"$ID2", "room":"$ROOM", "type":"message" } );
my $canon2 = qq({"type":"message","room":"$ROOM","id":"$ID2","user":"eve",)
           . qq("content":"caf\xc3\xa9 / \\"q\\"","ts":1700000000002});
publish_raw($redis, [ $channel, m_payload($ID, $canon1) ],
                    [ $channel, m_payload($ID2, $odd) ]);

# --- what m1 got --------------------------------------------------------------

my @f = frames($m1, 1.5, 5);
my @text = map { $_->{payload} } grep { $_->{opcode} == 1 } @f;
my @bad = grep { !defined decode($_) } @text;
ok(!@bad, 'every frame m1 got is valid UTF-8 JSON')
    or diag('bad frames: ' . join("\n", map { substr($_, 0, 120) } @bad));
ok(!grep({ $_->{opcode} == 8 } @f) && $m1->ok, 'm1 was not closed');
is(join("\n", @text), "$canon1\n$canon2",
   'm1 got exactly the two well-formed messages, as the server writes them');
my @pres = grep { ((decode($_) // {})->{type} // '') eq 'presence' } @text;
ok(!@pres, 'no presence event from a forged presence payload')
    or diag("@pres");

$m1->send_json({ type => 'who', room => $ROOM });
my $who = $m1->recv_until(sub { $_[0]{type} eq 'who' }, 3);
is($who && join(',', sort @{ $who->{users} || [] }), 'm1',
   'who lists only m1');

# --- a later join's history -----------------------------------------------------

{
    my $m2 = $t->ws(path => '/chat?user=m2');
    $m2->recv_json(3);
    $m2->send_json({ type => 'join', room => $ROOM, history => 50 });
    my ($raw, @h) = ('');
    for (1 .. 5) {
        my $m = $m2->recv_message(timeout => 3) or last;
        my $j = decode($m->{payload});
        next unless $j && $j->{type} eq 'history';
        @h = @{ $j->{messages} || [] };
        $raw = $m->{payload};
        last;
    }
    # the raw bytes of the messages in the reply
    ok(index($raw, "[$canon1,$canon2]") >= 0,
       'the history reply holds the two messages, as the server writes them')
        or diag(substr($raw, 0, 400));
    is(join(' ', map { $_->{id} } @h), "$ID $ID2",
       'a later join\'s history: only the two well-formed messages');
    $m2->disconnect;
}

# --- counted and logged ------------------------------------------------------------

is(status($t)->{relay_invalid}, $n_invalid, "status: relay_invalid $n_invalid");
{
    my $r = $t->http_get('/chat/status?format=prometheus');
    like($r->{body}, qr/^chat_relay_invalid_total\{zone="chat"\} $n_invalid$/m,
         "prometheus: chat_relay_invalid_total $n_invalid");
}

# the relay's heartbeat (every 2 s) reports what the last line left out
Time::HiRes::sleep(2.5);
my $elapsed = now() - $t_first;
my @lines = $t->grep_error_log(qr/invalid payload/);
my $counted = 0;
for (@lines) {
    $counted += /dropped an invalid payload/ ? 1 : 0;
    $counted += $1 if /and (\d+) more since the last report/;
    $counted += $1 if /dropped (\d+) more invalid payloads/;
}
cmp_ok(scalar @lines, '<=', int($elapsed) + 1,
       sprintf('%d log lines about them in %.1f s: at most about one a second',
               scalar @lines, $elapsed))
    or diag(join "\n", @lines);
is($counted, $n_invalid, 'the lines account for every one dropped')
    or diag(join "\n", @lines);
like($lines[0] // '', qr/\[warn\].*dropped an invalid payload from Redis in zone "chat": .* \(server $SID\)/,
     'the first line says why and which server sent it');
my @worse = $t->grep_error_log(qr/\[(?:error|crit|alert|emerg)\]/);
ok(!@worse, 'no [error] or worse in the log') or diag(join "\n", @worse);

$m1->disconnect;
$t->stop;
$redis->stop;
