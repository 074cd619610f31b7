# Deployments sharing one Redis are isolated (SPEC §8, "The relay"):
# channel names carry chat_redis_prefix and the database number of
# chat_redis, because Redis pub/sub ignores SELECT.
#
# Five servers (one worker each) on one private redis-server, a member of
# room "lobby" on each:
#
#   A  redis://.../1                        \  one deployment: they see
#   D  redis://.../1                        /  each other, nobody else
#   B  redis://.../2                        another database
#   C  redis://.../1, chat_redis_prefix other   another prefix
#   E  redis://... (no database: 0)
#
# Each member sends one message: A's and D's members get exactly the two
# of A and D, every other member only its own; presence and "who" stay
# within a deployment; PUBSUB CHANNELS shows the names
# "<prefix>:<db>:<zone>:r:<room>" and "<prefix>:<db>:<zone>:servers".
# Then chat_redis_prefix and chat_redis_queue at nginx -t: duplicate and
# invalid values are errors naming the file and line, a valid one passes.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client send_json take join_room
                        settle extract collect);
use Test::Chat::Redis;

plan skip_all => 'no redis-server'
    unless Test::Chat::Redis->available;

plan tests => 48;

my $ZONE = 'chat';

sub server_conf {
    my ($url, $extra) = @_;
    $extra = defined $extra ? "\n    $extra" : '';
    return (
        http => "chat_zone $ZONE 1m;\n    chat_redis $url;$extra",
        server => <<"_EOC_",
        location = /chat {
            chat $ZONE;
            chat_user \$arg_user;
        }
        location = /chat/status {
            chat_status $ZONE;
        }
_EOC_
        workers => 1,
    );
}

# a server, or undef (with the reason as a diagnostic) when it does not start
sub server {
    my ($name, @conf) = @_;
    my $t = eval { Test::Chat::Nginx->new(server_conf(@conf)) };
    diag("server $name did not start: $@") unless $t;
    return $t;
}

sub wait_redis_up {
    my $t = shift;
    return 0 unless $t;
    return poll(5, sub { (status($t)->{redis} // '') eq 'up' }, 0.05);
}

sub who {
    my ($c, $room) = @_;
    send_json($c, type => 'who', room => $room);
    my $w = take($c, sub { $_[0]{type} eq 'who' && $_[0]{room} eq $room }, 3);
    return '(no answer)' unless $w && ref $w->{users} eq 'ARRAY';
    return join ',', sort @{ $w->{users} };
}

my $redis = Test::Chat::Redis->start;

my %srv = (
    A => server(A => $redis->url(db => 1)),
    D => server(D => $redis->url(db => 1)),
    B => server(B => $redis->url(db => 2)),
    C => server(C => $redis->url(db => 1), 'chat_redis_prefix other;'),
    E => server(E => $redis->url),
);

for my $n (sort keys %srv) {
    ok(wait_redis_up($srv{$n}), "server $n: started, relay up");
}

# --- members ---------------------------------------------------------------

my %c;
for my $n (sort keys %srv) {
    next unless $srv{$n};
    my $user = lc $n;
    $c{$n} = client($srv{$n}, $user);
    join_room($c{$n}, 'lobby') or diag("$user: no joined reply");
}

SKIP: {
    skip 'a server did not start', 1 unless 5 == grep { $srv{$_} } keys %srv;
    is(join(' ', sort grep { length } $redis->cli('PUBSUB', 'CHANNELS')),
       join(' ', sort map { ("$_:$ZONE:r:lobby", "$_:$ZONE:servers") }
                     qw(chat:0 chat:1 chat:2 other:1)),
       'PUBSUB CHANNELS: <prefix>:<db>:<zone>:r:<room> and '
       . '<prefix>:<db>:<zone>:servers');
}

# A and D find each other (their subscriptions are up); give the others,
# if they were (wrongly) on the same channels, the time to show up too
ok(poll(5, sub { $c{A} && who($c{A}, 'lobby') =~ /\bd\b/ }, 0.1),
   'A learns of D\'s member (same prefix and database)');
Time::HiRes::sleep(0.5);

my %want_who = (A => 'a,d', D => 'a,d', B => 'b', C => 'c', E => 'e');
for my $n (sort keys %want_who) {
    is($c{$n} ? who($c{$n}, 'lobby') : '(no server)', $want_who{$n},
       "who on $n: $want_who{$n}");
}

# --- one message from each ----------------------------------------------------

for my $n (sort keys %c) {
    send_json($c{$n}, type => 'send', room => 'lobby',
              content => "from-" . lc $n, ref => lc $n);
}

my %want = (A => 'from-a from-d', D => 'from-a from-d', B => 'from-b',
            C => 'from-c', E => 'from-e');
my %got;
my $deadline = now() + 5;
for my $n (sort keys %want) {
    next unless $c{$n};
    my $k = () = $want{$n} =~ /\S+/g;
    $got{$n} = [ collect($c{$n}, sub { $_[0]{type} eq 'message' }, $k,
                         $deadline - now()) ];
}
settle(1, grep { defined } values %c);
for my $n (sort keys %want) {
    next unless $c{$n};
    push @{ $got{$n} }, extract($c{$n}, sub { $_[0]{type} eq 'message' });
}
for my $n (sort keys %want) {
    my $g = $c{$n} ? join(' ', sort map { $_->{content} } @{ $got{$n} })
                   : '(no server)';
    is($g, $want{$n}, "member on $n got exactly: $want{$n}");
}

# presence: only from the same deployment
for my $n (sort keys %want) {
    my @p = $c{$n} ? map { $_->{user} }
                     grep { $_->{type} eq 'presence' } @{ $c{$n}{all} }
                   : ('(no server)');
    my $w = $n eq 'A' ? 'd' : $n eq 'D' ? 'a' : '';
    my @other = grep { $_ ne $w } @p;
    ok(!@other, "member on $n: no presence from other deployments")
        or diag("presence of: @other");
}

{
    my @acks = map { $c{$_} ? extract($c{$_}, sub { $_[0]{type} eq 'ack' })
                            : () } sort keys %c;
    is(scalar @acks, 5, 'every sender got its ack');
}

# no payload from another deployment was taken for an invalid one
for my $n (sort keys %srv) {
    unless ($srv{$n}) {
        fail("server $n: no warnings or errors in its log (no server)");
        next;
    }
    my @w = $srv{$n}->grep_error_log(qr/\[(?:warn|error|crit|alert|emerg)\]/);
    ok(!@w, "server $n: no warnings or errors in its log")
        or diag(join "\n", @w[0 .. ($#w < 4 ? $#w : 4)]);
}

for my $n (sort keys %c) {
    $c{$n}{ws}->disconnect if $c{$n}{ws}->ok;
}
$_ && $_->stop for values %srv;

# --- chat_redis_prefix at nginx -t ------------------------------------------------

sub line_of {
    my ($t, $re) = @_;
    my @lines = split /\n/, $t->conf_text;
    my @n = grep { $lines[$_ - 1] =~ $re } 1 .. @lines;
    return $n[-1];
}

{
    my $t = Test::Chat::Nginx->new(
        server_conf($redis->url, "chat_redis_prefix a;\n"
                                 . "    chat_redis_prefix b;"),
        start => 0);
    my $line = line_of($t, qr/chat_redis_prefix b/);
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, 'nginx -t fails with chat_redis_prefix twice');
    like($out, qr/"chat_redis_prefix" directive is duplicate in \Q${\ $t->conf_path }\E:$line\b/,
         "... \"is duplicate\", naming the file and line $line") or diag($out);
    $t->cleanup;
}

for my $bad ('a:b', '"with space"', '""', 'x' x 65, "caf\xc3\xa9") {
    my $t = Test::Chat::Nginx->new(
        server_conf($redis->url, "chat_redis_prefix $bad;"), start => 0);
    my $line = line_of($t, qr/chat_redis_prefix/);
    my ($rc, $out) = $t->nginx_t;
    my $show = length $bad > 20 ? substr($bad, 0, 10) . '...' : $bad;
    isnt($rc, 0, "nginx -t fails for chat_redis_prefix $show");
    like($out, qr/invalid chat_redis_prefix .* in \Q${\ $t->conf_path }\E:$line\b/,
         "... the message names the value, the file and line $line")
        or diag($out);
    $t->cleanup;
}

{
    my $t = Test::Chat::Nginx->new(
        server_conf($redis->url, 'chat_redis_prefix My-app.v2_0;'),
        start => 0);
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, 'nginx -t passes with chat_redis_prefix My-app.v2_0')
        or diag($out);
    $t->cleanup;
}

# --- chat_redis_queue at nginx -t ------------------------------------------------

for my $bad ('0', 'many', '1000001') {
    my $t = Test::Chat::Nginx->new(
        server_conf($redis->url, "chat_redis_queue $bad;"), start => 0);
    my $line = line_of($t, qr/chat_redis_queue/);
    my ($rc, $out) = $t->nginx_t;
    isnt($rc, 0, "nginx -t fails for chat_redis_queue $bad");
    like($out, qr/\[emerg\].* in \Q${\ $t->conf_path }\E:$line\b/,
         "... naming the file and line $line") or diag($out);
    $t->cleanup;
}

{
    my $t = Test::Chat::Nginx->new(
        server_conf($redis->url, 'chat_redis_queue 50000;'), start => 0);
    my ($rc, $out) = $t->nginx_t;
    is($rc, 0, 'nginx -t passes with chat_redis_queue 50000') or diag($out);
    $t->cleanup;
}

$redis->stop;
