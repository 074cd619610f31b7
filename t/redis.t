# Cross-server relay through Redis (chat_redis): two nginx servers sharing
# one private redis-server.
#
#   1. members on both servers: messages exactly once, per-sender order,
#      unique ids, presence/who/members across servers, history
#   2. Redis subscriptions follow local membership (PUBSUB CHANNELS)
#   3. Redis killed mid-conversation: local chat goes on, status "down",
#      queued messages relayed exactly once after the restart
#   6. a server killed hard: its users leave on the other server
#      (run before 4 and 5, which use servers of their own)
#   4. wrong Redis password: [error] ... AUTH, status "down", local chat
#   5. bad chat_redis URLs: nginx -t fails naming file and line
#
# Everything waits by polling with deadlines; the whole file takes ~15 s
# (most of it the 7 s expiry of a dead server in part 6).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client send_json take join_room
                        settle extract collect);
use Test::Chat::WS;
use Test::Chat::Redis;

plan skip_all => 'no /usr/bin/redis-server'
    unless -x '/usr/bin/redis-server' && Test::Chat::Redis->available;

plan tests => 88;

my $T0 = Time::HiRes::time();
my $JSON = JSON::PP->new->utf8->canonical;
my $ZONE = 'chat';
my $SERVERS_CHANNEL = "chat:0:$ZONE:servers";
sub room_channel { "chat:0:$ZONE:r:$_[0]" }

# --- helpers ------------------------------------------------------------------

sub server_conf {
    my ($url, %o) = @_;
    return (
        http => "chat_zone $ZONE 4m;\n    chat_redis $url;",
        server => <<"_EOC_",
        location = /chat {
            chat $ZONE;
            chat_user \$arg_user;
            chat_history 200;
        }
        location = /chat/status {
            chat_status $ZONE;
        }
_EOC_
        workers => 2,
        %o,
    );
}

sub wait_redis_status {
    my ($t, $want, $timeout) = @_;
    my $got;
    poll($timeout, sub { $got = status($t)->{redis}; defined $got && $got eq $want }, 0.05);
    return $got;
}

# every client (Test::Chat::Util::client) of the file, for the final checks
my @Clients;

sub tracked_client {
    my ($t, $user, $label) = @_;
    my $c = client($t, $user, name => $label);
    push @Clients, $c;
    return $c;
}

# the "message" frames of $room with content matching $re
sub msg_like {
    my ($room, $re) = @_;
    return sub {
        $_[0]{type} eq 'message' && $_[0]{room} eq $room && $_[0]{content} =~ $re
    };
}

sub members { my $j = shift; return $j ? $j->{members} : 'no joined reply' }

sub who {
    my ($c, $room) = @_;
    send_json($c, type => 'who', room => $room);
    my $w = take($c, sub { $_[0]{type} eq 'who' && $_[0]{room} eq $room }, 3);
    return undef unless $w && ref $w->{users} eq 'ARRAY';
    return join ',', sort @{ $w->{users} };
}

# poll who until it lists exactly @users (sorted, comma-joined); returns the last answer
sub wait_who {
    my ($c, $room, $timeout, @users) = @_;
    my $want = join ',', sort @users;
    my $got;
    poll($timeout, sub { $got = who($c, $room); defined $got && $got eq $want }, 0.1);
    return defined $got ? $got : '(no answer)';
}

sub presence_pred {
    my ($room, $user, $event) = @_;
    return sub {
        $_[0]{type} eq 'presence' && $_[0]{room} eq $room
            && $_[0]{user} eq $user && $_[0]{event} eq $event
    };
}

# checks on one member's view of messages: exactly once, per-sender order
sub check_view {
    my ($name, $msgs, %senders) = @_;    # sender user => count
    my %seen;
    my %next = map { $_ => 0 } keys %senders;
    my @problems;
    for my $m (@$msgs) {
        my ($s, $i) = $m->{content} =~ /^(.+)-(\d+)$/ or do { push @problems, "odd content $m->{content}"; next };
        push @problems, "$m->{content} from user $m->{user}" if $m->{user} ne $s;
        push @problems, "duplicate $m->{content}" if $seen{ $m->{content} }++;
        if (!exists $next{$s}) { push @problems, "unexpected sender $s"; next }
        push @problems, "$s-$i out of order (expected $s-$next{$s})" if $i != $next{$s};
        $next{$s} = $i + 1 if $i >= $next{$s};
    }
    for my $s (sort keys %senders) {
        push @problems, "$s: got $next{$s} of $senders{$s}" if $next{$s} != $senders{$s};
    }
    my $total = 0; $total += $_ for values %senders;
    push @problems, "got " . scalar(@$msgs) . " messages, want $total" if @$msgs != $total;
    return @problems;
}

sub kill_nginx_hard {
    my $t = shift;
    my @pids = ($t->master_pid, $t->worker_pids);
    kill 'KILL', @pids;
    poll(5, sub { !grep { Test::Chat::Nginx->pid_alive($_) } @pids });
    $t->{running} = 0;    # nothing left to stop
    return !grep { Test::Chat::Nginx->pid_alive($_) } @pids;
}

sub sorted_channels {
    my ($redis) = @_;
    return join ' ', sort grep { length } $redis->cli('PUBSUB', 'CHANNELS', "chat:0:$ZONE:*");
}

sub numsub {
    my ($redis, $ch) = @_;
    my @l = $redis->cli('PUBSUB', 'NUMSUB', $ch);
    return $l[1];
}

# --- servers -------------------------------------------------------------------

my $redis = Test::Chat::Redis->start;
my $url = $redis->url;

my $A = Test::Chat::Nginx->new(server_conf($url));
my $B = Test::Chat::Nginx->new(server_conf($url));

for ([A => $A], [B => $B]) {
    my ($n, $t) = @$_;
    my $re = qr/chat: this worker relays zone "$ZONE" through Redis/;
    $t->wait_for_log($re, timeout => 5);
    is(scalar(my @l = $t->grep_error_log($re)), 1, "server $n: exactly one worker relays through Redis");
    is(wait_redis_status($t, 'up', 5), 'up', "server $n: status redis up");
}

# --- 1. two servers, one room --------------------------------------------------

my $a1 = tracked_client($A, 'a1');
my $a2 = tracked_client($A, 'a2');
my $b1 = tracked_client($B, 'b1');
my $b2 = tracked_client($B, 'b2');
ok($a1->{ws}->ok && $a2->{ws}->ok && $b1->{ws}->ok && $b2->{ws}->ok, 'four clients connected');

is(members(join_room($a1, 'r1')), 1, 'a1 joined r1 on A: 1 member');
is(poll(2, sub { numsub($redis, room_channel('r1')) == 1 }) ? 1 : numsub($redis, room_channel('r1')), 1,
   'server A subscribed to r1');
is(members(join_room($a2, 'r1')), 2, 'a2 joined r1 on A: 2 members');
ok(take($a1, presence_pred('r1', 'a2', 'join'), 3), 'a1 got presence join a2 (same server)');

ok(join_room($b1, 'r1'), 'b1 joined r1 on B');
ok(take($a1, presence_pred('r1', 'b1', 'join'), 3), 'a1 (server A) got presence join b1 (server B)');
ok(take($a2, presence_pred('r1', 'b1', 'join'), 3), 'a2 (server A) got presence join b1 (server B)');
is(wait_who($b1, 'r1', 3, qw(a1 a2 b1)), 'a1,a2,b1', 'B learned the remote members of r1 (who on B)');

is(members(join_room($b2, 'r1')), 4, 'b2 joined r1 on B: members counts remote users (4)');
ok(take($b1, presence_pred('r1', 'b2', 'join'), 3), 'b1 got presence join b2 (same server)');
ok(take($a1, presence_pred('r1', 'b2', 'join'), 3), 'a1 got presence join b2 (server B)');

my $a3 = tracked_client($A, 'a3');
is(members(join_room($a3, 'r1')), 5, 'a3 joined r1 on A: 5 members');
ok(take($b1, presence_pred('r1', 'a3', 'join'), 3), 'b1 (server B) got presence join a3 (server A)');
ok(take($b2, presence_pred('r1', 'a3', 'join'), 3), 'b2 (server B) got presence join a3 (server A)');

is(who($a1, 'r1'), 'a1,a2,a3,b1,b2', 'who on A lists the users of both servers');
is(who($b2, 'r1'), 'a1,a2,a3,b1,b2', 'who on B lists the users of both servers');

# several senders on both servers, interleaved
my $N = 20;
my @senders = ($a1, $a2, $b1, $b2);
for my $i (0 .. $N - 1) {
    for my $s (@senders) {
        send_json($s, type => 'send', room => 'r1', content => "$s->{user}-$i", ref => "$s->{user}-$i");
    }
}
my %want = map { $_->{user} => $N } @senders;
my @members = ($a1, $a2, $a3, $b1, $b2);
my %view;
my $deadline = now() + 10;
for my $c (@members) {
    $view{ $c->{name} } = [ collect($c, msg_like('r1', qr/^[ab]\d-\d+$/), 4 * $N, $deadline - now()) ];
}
settle(0.5, @members);
for my $c (@members) {
    push @{ $view{ $c->{name} } }, extract($c, sub { $_[0]{type} eq 'message' && $_[0]{room} eq 'r1' });
}
for my $c (@members) {
    my @p = check_view($c->{name}, $view{ $c->{name} }, %want);
    ok(!@p, "$c->{name} got every message exactly once, each sender in order")
        or diag(join "\n", @p[0 .. ($#p < 9 ? $#p : 9)]);
}

# ids: unique, the same message has the same id at every member
{
    my (%id_of, @problems);
    for my $c (@members) {
        my %ids;
        for my $m (@{ $view{ $c->{name} } }) {
            push @problems, "$c->{name}: id $m->{id} seen twice" if $ids{ $m->{id} }++;
            if (defined $id_of{ $m->{content} } && $id_of{ $m->{content} } ne $m->{id}) {
                push @problems, "$c->{name}: $m->{content} has id $m->{id}, elsewhere $id_of{ $m->{content} }";
            }
            $id_of{ $m->{content} } //= $m->{id};
        }
    }
    my %n; $n{$_}++ for values %id_of;
    push @problems, "id $_ used by $n{$_} messages" for grep { $n{$_} > 1 } keys %n;
    ok(!@problems && keys(%id_of) == 4 * $N, 'message ids unique across servers and the same at every member')
        or diag(join "\n", @problems[0 .. ($#problems < 9 ? $#problems : 9)]);
    my @bad = grep { !/^\d+-[0-9a-f]{12}$/ } values %id_of;
    ok(!@bad, 'ids carry a server tag (<digits>-<12 hex>)') or diag("ids: @bad[0 .. ($#bad < 4 ? $#bad : 4)]");

    # acks: one per send, with the id the members saw
    my @ack_problems;
    for my $s (@senders) {
        my @acks = extract($s, sub { $_[0]{type} eq 'ack' });
        push @ack_problems, "$s->{name}: " . scalar(@acks) . " acks" if @acks != $N;
        for my $a (@acks) {
            my $id = $id_of{ $a->{ref} // '' };
            push @ack_problems, "$s->{name}: ack $a->{ref} id $a->{id}, message id " . ($id // 'none')
                unless defined $id && $id eq $a->{id};
        }
    }
    ok(!@ack_problems, 'every sender got one ack per message, with the delivered id')
        or diag(join "\n", @ack_problems);

    my $same = sub { join ' ', map { $_->{id} } @{ $view{ $_[0] } } };
    ok($same->('a1') eq $same->('a2') && $same->('a1') eq $same->('a3')
       && $same->('b1') eq $same->('b2'),
       'same order for all members of one server');
}

# history on B includes the messages sent on A
my $b3 = tracked_client($B, 'b3');
{
    my $j = join_room($b3, 'r1', history => 100);
    is($j && $j->{members}, 6, 'b3 joined r1 on B: 6 members');
    my $h = take($b3, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'r1' }, 3);
    my @hm = $h ? @{ $h->{messages} || [] } : ();
    my @from_a1 = map { $_->{content} } grep { $_->{user} eq 'a1' } @hm;
    is(join(' ', @from_a1), join(' ', map { "a1-$_" } 0 .. $N - 1),
       'join with history on B includes the messages sent on A, in order');
    is(join(' ', sort map { $_->{id} } @hm), join(' ', sort map { $_->{id} } @{ $view{b1} }),
       'history on B has all 80 messages with their ids');
}

# presence leave across servers
send_json($b2, type => 'leave', room => 'r1');
ok(take($b2, sub { $_[0]{type} eq 'left' && $_[0]{room} eq 'r1' }, 3), 'b2 left r1');
ok(take($a1, presence_pred('r1', 'b2', 'leave'), 3), 'a1 (server A) got presence leave b2 (server B)');
$a3->{ws}->close(code => 1000);
$a3->{closed} = 1;
ok(take($b1, presence_pred('r1', 'a3', 'leave'), 3), 'b1 (server B) got presence leave a3 (closed on A)');
is(wait_who($a1, 'r1', 2, qw(a1 a2 b1 b3)), 'a1,a2,b1,b3', 'who on A after the leaves');
is(wait_who($b3, 'r1', 2, qw(a1 a2 b1 b3)), 'a1,a2,b1,b3', 'who on B after the leaves');

# --- 2. subscriptions follow membership ---------------------------------------

{
    my $ch = room_channel('sub');
    my @ch = grep { length } $redis->cli('PUBSUB', 'CHANNELS');
    ok((grep { $_ eq $SERVERS_CHANNEL } @ch), "servers channel $SERVERS_CHANNEL subscribed")
        or diag("channels: @ch");
    ok(!(grep { $_ eq $ch } @ch), "$ch not subscribed before anyone joined");

    ok(join_room($a1, 'sub'), 'a1 joined room sub on A');
    ok(poll(2, sub { grep { $_ eq $ch } $redis->cli('PUBSUB', 'CHANNELS') }),
       "$ch listed in PUBSUB CHANNELS once a member joined");
    is(poll(2, sub { numsub($redis, $ch) == 1 }) ? 1 : numsub($redis, $ch), 1,
       "$ch subscribed once (server A)");
    ok(join_room($b1, 'sub'), 'b1 joined room sub on B');
    is(poll(2, sub { numsub($redis, $ch) == 2 }) ? 2 : numsub($redis, $ch), 2,
       "$ch subscribed twice (servers A and B)");

    my $expect = join ' ', sort $SERVERS_CHANNEL, room_channel('r1'), $ch;
    is(sorted_channels($redis), $expect, 'PUBSUB CHANNELS: exactly the rooms with members + servers');

    # a server keeps following a room 5 s after its last member left (so
    # that members coming straight back find no hole in its ring), then
    # unsubscribes at its next 1 s tick
    send_json($a1, type => 'leave', room => 'sub');
    ok(take($a1, sub { $_[0]{type} eq 'left' && $_[0]{room} eq 'sub' }, 3), 'a1 left sub');
    my $left = now();
    Time::HiRes::sleep(3);
    is(numsub($redis, $ch), 2, "$ch: A still subscribed 3 s after its last member left");
    is(poll(5, sub { numsub($redis, $ch) == 1 }) ? 1 : numsub($redis, $ch), 1,
       "$ch: A unsubscribed after its last member left");
    my $took = now() - $left;
    ok($took >= 4.5 && $took < 8, sprintf("... %.1f s after (5 s, then the next tick)", $took));
    send_json($b1, type => 'leave', room => 'sub');
    ok(take($b1, sub { $_[0]{type} eq 'left' && $_[0]{room} eq 'sub' }, 3), 'b1 left sub');
    ok(poll(8, sub { !grep { $_ eq $ch } $redis->cli('PUBSUB', 'CHANNELS') }),
       "$ch no longer in PUBSUB CHANNELS after the last member left");
    is(sorted_channels($redis), join(' ', sort $SERVERS_CHANNEL, room_channel('r1')),
       'PUBSUB CHANNELS back to r1 + servers');
}

# --- 3. Redis down mid-conversation ------------------------------------------

{
    ok($redis->kill('KILL'), 'redis-server killed');
    is(wait_redis_status($A, 'down', 5), 'down', 'server A: status redis down');
    is(wait_redis_status($B, 'down', 5), 'down', 'server B: status redis down');

    # local chat on each server during the outage
    my $K = 5;
    for my $i (0 .. $K - 1) {
        send_json($a1, type => 'send', room => 'r1', content => "outA-$i", ref => "outA-$i");
        send_json($b1, type => 'send', room => 'r1', content => "outB-$i", ref => "outB-$i");
    }
    my @a2got = map { $_->{content} } collect($a2, msg_like('r1', qr/^outA-/), $K, 3);
    is("@a2got", join(' ', map { "outA-$_" } 0 .. $K - 1), 'A: local chat works while Redis is down');
    my @b3got = map { $_->{content} } collect($b3, msg_like('r1', qr/^outB-/), $K, 3);
    is("@b3got", join(' ', map { "outB-$_" } 0 .. $K - 1), 'B: local chat works while Redis is down');
    my @acks;
    for my $c ($a1, $b1) {
        for (1 .. $K) {
            my $a = take($c, sub { $_[0]{type} eq 'ack' || $_[0]{type} eq 'error' }, 3) or last;
            push @acks, "$c->{name}:$a->{type}:" . ($a->{ref} // '');
        }
    }
    is("@acks", join(' ', (map { "a1:ack:outA-$_" } 0 .. $K - 1), (map { "b1:ack:outB-$_" } 0 .. $K - 1)),
       'senders got their acks while Redis is down');

    ok($redis->start_again, 'redis-server restarted on the same port ' . $redis->port)
        or diag($redis->{start_error});

    is(wait_redis_status($A, 'up', 15), 'up', 'server A: status redis up again');
    is(wait_redis_status($B, 'up', 15), 'up', 'server B: status redis up again');

    # both servers are subscribed to r1 again: a message published now
    # reaches the other server; one sent after the outage messages comes
    # after them (one publisher connection per server, FIFO queue)
    my $ch = room_channel('r1');
    is(poll(5, sub { numsub($redis, $ch) == 2 }) ? 2 : numsub($redis, $ch), 2,
       'both servers subscribed to r1 again');
    send_json($a2, type => 'send', room => 'r1', content => 'afterA-0');
    send_json($b3, type => 'send', room => 'r1', content => 'afterB-0');
    my $deadline = now() + 15;
    my %got;
    my @pairs = ([$b1, 'outA', 'afterA'], [$b3, 'outA', 'afterA'],
                 [$a1, 'outB', 'afterB'], [$a2, 'outB', 'afterB']);
    my $markers = 0;
    for my $pair (@pairs) {
        my ($c, $p, $after) = @$pair;
        $markers++ if collect($c, msg_like('r1', qr/^$after-/), 1, $deadline - now());
    }
    is($markers, 4, 'live relay in both directions after Redis is back');
    # the outage messages were published before the markers; give a
    # re-publication (if any) one more second, then count
    for my $pair (@pairs) {
        my ($c, $p) = @$pair;
        $got{ $c->{name} } = [ map { $_->{content} } collect($c, msg_like('r1', qr/^$p-/), $K, 1) ];
    }
    settle(0.5, $a1, $a2, $b1, $b3);
    my (@missing, @bad);
    for my $pair (@pairs) {
        my ($c, $p) = @$pair;
        push @{ $got{ $c->{name} } },
            map { $_->{content} } extract($c, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^$p-/ });
        my @g = @{ $got{ $c->{name} } };
        my $want = join ' ', map { "$p-$_" } 0 .. $K - 1;
        push @missing, "$c->{name} got [@g], want [$want]" if "@g" ne $want;
        # whatever arrived: no copies, in order
        my $last = -1;
        for (@g) {
            my ($i) = /-(\d+)$/;
            push @bad, "$c->{name}: $_ after $p-$last" if $i <= $last;
            $last = $i;
        }
    }
    {
        ok(!@missing, 'messages sent during the outage reached the other server (all members, in order)')
            or diag(join "\n", @missing);
    }
    ok(!@bad, 'no outage message relayed twice or out of order') or diag(join "\n", @bad);
    my @dups = map { my $c = $_; map { "$c->{name}: $_->{content}" }
        extract($c, sub { $_[0]{type} eq 'message' && $_[0]{content} =~ /^out[AB]-/ }) } $a2, $b3;
    ok(!@dups, 'no copies of local messages came back through Redis') or diag("@dups");
}

# --- 6. a server killed hard ---------------------------------------------------

{
    my $dA = tracked_client($A, 'dual', 'dual@A');
    my $dB = tracked_client($B, 'dual', 'dual@B');
    ok(join_room($dA, 'r1') && join_room($dB, 'r1'), 'dual joined r1 on both servers');
    is(wait_who($a1, 'r1', 3, qw(a1 a2 b1 b3 dual)), 'a1,a2,b1,b3,dual', 'who on A before B dies');

    my $t0 = now();
    ok(kill_nginx_hard($B), 'server B killed with SIGKILL (master and workers)');
    $b1->{closed} = $b3->{closed} = $dB->{closed} = $b2->{closed} = 1;

    my $l1 = take($a1, presence_pred('r1', 'b1', 'leave'), 12);
    my $l3 = take($a1, presence_pred('r1', 'b3', 'leave'), $l1 ? 3 : 0.1);
    ok($l1 && $l3, sprintf('a1 got presence leave for b1 and b3 (%.1f s after the kill)', now() - $t0));
    ok(take($a2, presence_pred('r1', 'b1', 'leave'), 2), 'a2 got presence leave b1');
    is(wait_who($a1, 'r1', 2, qw(a1 a2 dual)), 'a1,a2,dual', 'who on A no longer lists the users of B');
    my @dl = grep { $_->{type} eq 'presence' && $_->{user} eq 'dual' && $_->{event} eq 'leave' }
             @{ $a1->{all} }, @{ $a2->{all} };
    ok(!@dl, 'no presence leave for dual, still connected on A');
    send_json($a1, type => 'join', room => 'r1');
    my $j = take($a1, sub { $_[0]{type} eq 'joined' && $_[0]{room} eq 'r1' }, 3);
    is($j && $j->{members}, 3, 'members on A back to 3');
}

{
    my @errs = map { my $c = $_; map { "$c->{name}: " . $JSON->encode($_) } grep { $_->{type} eq 'error' } @{ $c->{all} } } @Clients;
    ok(!@errs, 'no error frames to any client') or diag(join "\n", @errs);
}
{
    # the only problems logged: the Redis connections going down (section 3)
    my @bad = map { $_->[0] . ': ' . $_->[1] }
              grep { $_->[1] !~ /\[error\].*chat redis: ".*" is down, reconnecting/ }
              map { my $n = $_->[0]; map { [$n, $_] } $_->[1]->grep_error_log(qr/\[(?:warn|error|crit|alert|emerg)\]/) }
              [A => $A], [B => $B];
    ok(!@bad, 'no other [warn]/[error]/[crit]/[alert]/[emerg] in the error logs of A and B')
        or diag(join "\n", @bad);
}
$_->{ws}->disconnect for grep { $_->{ws}->ok } @Clients;
@Clients = ();
$A->stop;
$redis->stop;

# --- 4. wrong password -----------------------------------------------------------

{
    my $pw = Test::Chat::Redis->start(password => 'right-secret');
    my $C = Test::Chat::Nginx->new(server_conf($pw->url(password => 'wrong-pw-xyz')));
    ok($C->wait_for_log(qr/\[error\].*AUTH/, timeout => 5), 'AUTH failure logged as [error]')
        or diag($C->error_log);
    is(wait_redis_status($C, 'down', 3), 'down', 'status redis down with a wrong password');
    Time::HiRes::sleep(0.3);
    is(status($C)->{redis}, 'down', 'status stays down');
    unlike($C->error_log, qr/wrong-pw-xyz/, 'the password is not written to error.log');

    my $u1 = tracked_client($C, 'u1');
    my $u2 = tracked_client($C, 'u2');
    ok(join_room($u1, 'loc') && join_room($u2, 'loc'), 'two users joined a room');
    send_json($u1, type => 'send', room => 'loc', content => 'local-0', ref => 'x');
    my @m = collect($u2, msg_like('loc', qr/^local-/), 1, 3);
    is(scalar(@m) && $m[0]{content}, 'local-0', 'local chat works with Redis unusable');
    my $ack = take($u1, sub { $_[0]{type} eq 'ack' || $_[0]{type} eq 'error' }, 3);
    is($ack && $ack->{type}, 'ack', 'sender got an ack');
    $_->{ws}->disconnect for $u1, $u2;
    $C->stop;
}

# --- 5. bad URLs -------------------------------------------------------------------

for my $bad ('http://x', 'redis://127.0.0.1:notaport') {
    my $t = Test::Chat::Nginx->new(server_conf($bad), start => 0);
    my @lines = split /\n/, $t->conf_text;
    my ($line) = grep { $lines[$_ - 1] =~ /chat_redis/ } 1 .. @lines;
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "nginx -t fails for chat_redis $bad");
    like($out, qr/invalid redis URL.* in \Q${\ $t->conf_path }\E:$line\b/,
         "the message names the problem, the file and line $line") or diag($out);
    $t->cleanup;
}

diag(sprintf 'redis.t took %.1f s', now() - $T0) if $ENV{TEST_VERBOSE};
