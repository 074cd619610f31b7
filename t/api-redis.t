# The HTTP API across two nginx servers joined by Redis (SPEC §11): a
# publish on one server reaches members on both, who lists users of both,
# a disconnect closes the user's connections on both, and a forged
# disconnect payload on the servers channel is checked like any relay input.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client take);
use Test::Chat::Redis;

plan skip_all => 'no /usr/bin/redis-server'
    unless -x '/usr/bin/redis-server' && Test::Chat::Redis->available;

my $JSON = JSON::PP->new->utf8->canonical;

my $redis = Test::Chat::Redis->start;

sub server_conf {
    return (
        http => "chat_zone chat 4m;\n    chat_redis " . $redis->url . ";",
        server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
        }
        location = /api {
            chat_api chat;
        }
        location = /chat/status {
            chat_status chat;
        }
_EOC_
        workers => 2,
    );
}

my $A = Test::Chat::Nginx->new(server_conf());
my $B = Test::Chat::Nginx->new(server_conf());

for my $t ($A, $B) {
    poll(10, sub { (status($t)->{redis} || '') eq 'up' }, 0.05);
}
is(status($A)->{redis}, 'up', 'A: redis up');
is(status($B)->{redis}, 'up', 'B: redis up');

sub post {
    my ($t, $body) = @_;
    $body = $JSON->encode($body);
    my $r = $t->http("POST /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                     . "Content-Type: application/json\r\nContent-Length: "
                     . length($body) . "\r\n\r\n$body", timeout => 5);
    $r->{json} = eval { $JSON->decode($r->{body}) };
    return $r;
}

sub joined {
    my ($t, $user, $room) = @_;
    my $c = client($t, $user);
    $c->{ws}->send_json({ type => 'join', room => $room });
    take($c, sub { $_[0]{type} eq 'joined' }, 3) or diag("$user: not joined");
    return $c;
}

my $a1 = joined($A, 'ann', 'hall');
my $b1 = joined($B, 'bob', 'hall');

# presence of the other server's user: the relay is through
ok(take($a1, sub { $_[0]{type} eq 'presence' && $_[0]{user} eq 'bob' }, 5),
   'A sees bob of B join');

# --- publish on A reaches members on both ------------------------------------
{
    my $r = post($A, { type => 'publish', room => 'hall', user => 'bot', content => 'both' });
    is($r->{status}, 200, 'publish on A: 200');
    my $ma = take($a1, sub { $_[0]{type} eq 'message' }, 5);
    my $mb = take($b1, sub { $_[0]{type} eq 'message' }, 5);
    ok($ma && $ma->{id} eq $r->{json}{id}, 'a member on A gets it');
    ok($mb && $mb->{id} eq $r->{json}{id} && $mb->{content} eq 'both',
       'a member on B gets it through Redis, same id');
    my $h = post($B, { type => 'history', room => 'hall' });
    ok(grep({ $_->{id} eq $r->{json}{id} } @{ $h->{json}{messages} || [] }),
       'B\'s history has it');
}

# --- who on either server lists both ------------------------------------------
{
    my $w = post($B, { type => 'who', room => 'hall' });
    is_deeply([ sort @{ $w->{json}{users} || [] } ], [qw(ann bob)],
              'who on B: users of both servers') or diag($w->{body});
}

# --- disconnect on A closes the user's connections on both ---------------------
{
    my @on_a = map { client($A, 'dora') } 1 .. 2;
    my @on_b = map { client($B, 'dora') } 1 .. 2;
    my $stay = client($B, 'stay');
    my $r = post($A, { type => 'disconnect', user => 'dora' });
    is($r->{status}, 200, 'disconnect on A: 200');
    is_deeply($r->{json}, { closed => 2 }, 'closed counts A\'s connections');
    my $n = 0;
    for my $c (@on_a, @on_b) {
        my ($code, $eof, $reason) = $c->{ws}->expect_close(timeout => 5);
        $n++ if $code && $code == 1008 && $reason eq 'disconnected';
    }
    is($n, 4, 'all four connections (two per server) closed with 1008 "disconnected"');
    $stay->{ws}->send_json({ type => 'join', room => 'x' });
    ok(take($stay, sub { $_[0]{type} eq 'joined' }, 3), 'another user on B stays');
    $stay->{ws}->close;
}

# --- a malformed disconnect payload is invalid relay input ---------------------
{
    my $inv = status($B)->{relay_invalid} || 0;
    my $keep = client($B, 'kept');
    $redis->cli('PUBLISH', 'chat:0:chat:servers', '0123456789abcdef K');
    poll(3, sub { (status($B)->{relay_invalid} || 0) > $inv }, 0.05);
    cmp_ok(status($B)->{relay_invalid} || 0, '>', $inv,
           'a disconnect without a user is counted invalid');
    $keep->{ws}->send_json({ type => 'join', room => 'y' });
    ok(take($keep, sub { $_[0]{type} eq 'joined' }, 3), 'and closes nobody');
    $keep->{ws}->close;
}

$_->{ws}->close for $a1, $b1;

for my $t ($A, $B) {
    my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
    is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
        or diag(join "\n", @bad);
}

undef $A;
undef $B;

done_testing();
