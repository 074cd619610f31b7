#!/usr/bin/perl

# Tests src/ngx_chat_redis.c through the test-only probe module
# (ngx_http_redis_probe_module.c): commands, binary payloads, pipelining,
# AUTH, SELECT, unix sockets, pub/sub, timeouts, an outage of Redis and the
# reconnect after it.  Starts its own redis-server and nginx on free
# loopback ports and stops them, by pid, when done.
#
#   make -C t/redis-client test
#
# TEST_REDIS_PROBE_MODULE  the probe .so (set by the Makefile)
# TEST_NGINX_BINARY        nginx (default /usr/sbin/nginx)
# TEST_REDIS_SERVER        redis-server (default: from PATH)
# TEST_KEEP=1              keep the temporary directory (logs)

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::Chat::Probe;

my $module = $ENV{TEST_REDIS_PROBE_MODULE}
    or plan skip_all => 'TEST_REDIS_PROBE_MODULE not set; '
                        . 'run make -C t/redis-client test';
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $redis_server = $ENV{TEST_REDIS_SERVER} || 'redis-server';

plan skip_all => "no $redis_server"
    if system("command -v $redis_server >/dev/null 2>&1") != 0;

my $dir = probe_dir('redis-probe');


###############################################################################
# helpers

# a minimal RESP client for checking what really is in Redis
sub redis {
    my ($opt, @cmd) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$opt->{port}",
                                  Timeout => 3)
        or return "connect failed: $!";
    binmode $s;

    my @cmds;
    push @cmds, ['AUTH', $opt->{auth}] if defined $opt->{auth};
    push @cmds, ['SELECT', $opt->{db}] if defined $opt->{db};
    push @cmds, \@cmd;

    my $out = '';
    for my $c (@cmds) {
        $out .= '*' . @$c . "\r\n";
        $out .= '$' . length($_) . "\r\n$_\r\n" for @$c;
    }
    print $s $out;

    my $buf = '';
    my $reply;
    $reply = resp_read($s, \$buf) for @cmds;
    close $s;
    return $reply;
}

sub resp_fill {
    my ($s, $buf, $need) = @_;
    while (length $$buf < $need) {
        my $n = sysread $s, $$buf, 65536, length $$buf;
        die "redis connection closed" unless $n;
    }
}

sub resp_line {
    my ($s, $buf) = @_;
    while ((my $i = index $$buf, "\r\n") < 0) {
        resp_fill($s, $buf, length($$buf) + 1);
    }
    my $i = index $$buf, "\r\n";
    my $line = substr $$buf, 0, $i;
    substr($$buf, 0, $i + 2) = '';
    return $line;
}

sub resp_read {
    my ($s, $buf) = @_;

    my $line = resp_line($s, $buf);
    my ($t, $v) = (substr($line, 0, 1), substr($line, 1));

    return "+$v" if $t eq '+';
    return "-$v" if $t eq '-';
    return $v if $t eq ':';

    if ($t eq '$') {
        return undef if $v < 0;
        resp_fill($s, $buf, $v + 2);
        my $data = substr $$buf, 0, $v;
        substr($$buf, 0, $v + 2) = '';
        return $data;
    }

    if ($t eq '*') {
        return undef if $v < 0;
        return [map { resp_read($s, $buf) } 1 .. $v];
    }

    die "bad RESP line: $line";
}

sub start_redis {
    my (%o) = @_;

    my @args = ('--port', $o{port}, '--bind', '127.0.0.1', '--save', '',
                '--appendonly', 'no', '--daemonize', 'no', '--dir', $dir,
                '--logfile', "$dir/redis-$o{port}.log");
    push @args, '--requirepass', $o{password} if defined $o{password};
    push @args, '--unixsocket', $o{unix}, '--unixsocketperm', '777'
        if $o{unix};

    my $pid = spawn("redis-$o{port}", $redis_server, @args);

    for (1 .. 250) {
        my $r = eval { redis({ port => $o{port} }, 'PING') } // '';
        return $pid if $r eq '+PONG' || $r =~ /^-NOAUTH/;
        sleep 0.02;
    }

    die "redis-server on $o{port} did not start";
}

my $http_port = http_port(free_port());

# "?cmd=A&a=B&a=C..." from a list
sub rq {
    my ($cmd, @args) = @_;
    return '?cmd=' . esc($cmd) . join '', map { '&a=' . esc($_) } @args;
}

# the messages recorded by a subscriber location: [channel, payload], ...
sub messages {
    my ($loc) = @_;
    my $data = get($loc);
    my @m;
    while (length $data) {
        $data =~ s/^([^\n]*)\n(\d+)\n//s or return [[bad => $data]];
        my ($channel, $len) = ($1, $2);
        push @m, [$channel, substr($data, 0, $len)];
        substr($data, 0, $len + 1) = '';
    }
    return \@m;
}


###############################################################################
# configuration errors: nginx -t reports them with file:line

my $bad = 0;

for my $case (
    ['redis://127.0.0.1:99999',       qr/invalid redis URL: invalid port/],
    ['redis://no-such-host.invalid',  qr/redis host not found/],
    ['redis://127.0.0.1/x',           qr/invalid redis database number/],
    ['redis://user@127.0.0.1',        qr/invalid redis URL: credentials/],
    ['redis://:@127.0.0.1',           qr/invalid redis URL: empty password/],
    ['redis://:a%zz@127.0.0.1',       qr/invalid redis URL: bad %-escape/],
    ['redis://',                      qr/invalid redis URL/],
    ['redis:///3',                    qr/invalid redis URL: no host/],
    ['unix://:pw@/tmp/redis.sock',    qr/invalid redis URL: use "unix:/],
    ['unix:/tmp/redis.sock?x=1',      qr/only "\?db=N"/],
    ['unix:/tmp/redis.sock?db=z',     qr/invalid redis database number/],
    ['http://127.0.0.1',              qr/invalid redis URL/],
)
{
    my ($url, $re) = @$case;
    my $conf = "$dir/bad" . $bad++ . '.conf';

    open my $f, '>', $conf or die;
    print $f <<"EOF";
load_module $module;
error_log $dir/bad.log;
pid $dir/bad.pid;
events { }
http {
    server {
        location / {
            redis_probe $url;
        }
    }
}
EOF
    close $f;

    my $out = `$nginx -t -p $dir/ -e $dir/bad.log -c $conf 2>&1`;
    like($out, qr/\[emerg\].*$re.* in \Q$conf\E:8/, "config: $url");
}

{
    # good ones parse
    my $conf = "$dir/good.conf";
    open my $f, '>', $conf or die;
    print $f <<"EOF";
load_module $module;
error_log $dir/bad.log;
pid $dir/bad.pid;
events { }
http {
    server {
        location /a { redis_probe redis://localhost; }
        location /b { redis_probe REDIS://u%40x:p%40ss\@127.0.0.1:6380/15; }
        location /c { redis_probe redis://[::1]:6379/; }
        location /d { redis_probe unix:/tmp/r.sock?db=3; }
        location /e { redis_probe_subscriber redis://127.0.0.1 ch pattern
                          connect_timeout=1s command_timeout=2s; }
    }
}
EOF
    close $f;

    my $out = `$nginx -t -p $dir/ -e $dir/bad.log -c $conf 2>&1`;
    like($out, qr/test is successful/, 'config: good URLs parse');
}


###############################################################################
# start Redis (plain, and with a password), fake servers, nginx

my $rport = free_port();
my $aport = free_port();
my $unix = "$dir/redis.sock";

my $redis = start_redis(port => $rport, unix => $unix);
my $redis_auth = start_redis(port => $aport, password => 'sekret');

# accepts connections (the kernel does) but never answers
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Listen => 128, ReuseAddr => 1) or die;
my $hport = $hole->sockport;

# its accept queue full: connecting hangs, SYNs are dropped
my $full = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Listen => 1, ReuseAddr => 1) or die;
my $fport = $full->sockport;
my @fill = map {
    IO::Socket::INET->new(PeerAddr => "127.0.0.1:$fport", Blocking => 0)
} 1 .. 4;

# answers every command with an array header claiming 100,000,000
# elements (hiredis 0.14 would allocate 800 MB for it before any arrived)
my $lport = free_port();
my $liar = spawn('liar', $^X, '-MIO::Socket::INET', '-e', <<'PERL', $lport);
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
    LocalPort => $ARGV[0], Listen => 16, ReuseAddr => 1) or die "$!";
my @keep;
while (my $c = $l->accept) {
    my $buf;
    $c->sysread($buf, 4096);
    $c->syswrite("*100000000\r\n");
    push @keep, $c;
}
PERL
wait_for(sub {
    IO::Socket::INET->new(PeerAddr => "127.0.0.1:$lport", Timeout => 1)
}, 10) or BAIL_OUT('the fake Redis did not start');

mkdir "$dir/logs";

open my $cf, '>', "$dir/nginx.conf" or die;
print $cf <<"EOF";
load_module $module;

worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/logs/error.log notice;

events {
    worker_connections 1024;
}

http {
    access_log off;
    client_body_temp_path $dir/body;
    client_max_body_size 16m;
    client_body_buffer_size 16m;

    server {
        listen 127.0.0.1:$http_port;

        location /cmd { redis_probe redis://127.0.0.1:$rport; }
        location /db3 { redis_probe redis://127.0.0.1:$rport/3; }
        location /badselect { redis_probe redis://127.0.0.1:$rport/99; }
        location /unix { redis_probe unix:$unix?db=2; }

        location /sub {
            redis_probe_subscriber redis://127.0.0.1:$rport/0 chan1;
        }

        location /psub {
            redis_probe_subscriber redis://127.0.0.1:$rport/1 chan* pattern;
        }

        location /authok { redis_probe redis://:sekret\@127.0.0.1:$aport; }
        location /authpct { redis_probe redis://:sek%72et\@127.0.0.1:$aport; }
        location /authuser {
            redis_probe redis://default:sekret\@127.0.0.1:$aport/4;
        }
        location /authbad { redis_probe redis://:wrong\@127.0.0.1:$aport; }

        location /hang {
            redis_probe redis://127.0.0.1:$hport command_timeout=500ms;
        }

        location /liar {
            redis_probe redis://127.0.0.1:$lport command_timeout=3s;
        }

        location /ctimeout {
            redis_probe redis://127.0.0.1:$fport connect_timeout=1500ms;
        }
    }
}
EOF
close $cf;

my $nginx_pid = spawn('nginx', $nginx, '-p', "$dir/", '-e',
                      "$dir/logs/error.log", '-c', "$dir/nginx.conf");

wait_for(sub {
    IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port", Timeout => 1)
}, 10) or BAIL_OUT('nginx did not start');


###############################################################################
# a command queued while the first attempt connects: the connect timeout
# fails it (502), then the connection is down (503 at once)

{
    my $t = time;
    my ($status, $body) = http('/ctimeout' . rq('PING'));
    my $took = time - $t;

    is($status, 502, 'queued while connecting, failed by connect timeout');
    ok($took > 0.5 && $took < 3, "connect timeout after ${took}s");

    ($status, $body) = http('/ctimeout' . rq('PING'));
    is("$status $body", "503 down\n", 'then down: declined');

    is(log_count(qr/"redis:\/\/127\.0\.0\.1:$fport" is down, reconnecting in \d+ms: connect\(\) timed out \(110: /),
       1, 'connect timeout logged once');
}


###############################################################################
# commands

wait_for(sub { get('/cmd?state=1') eq "up\n" }, 5);
is(get('/cmd?state=1'), "up\n", 'up');

is(get('/cmd' . rq('PING')), '+PONG', 'PING');
is(get('/cmd' . rq('SET', 'k', 'v')), '+OK', 'SET');
is(get('/cmd' . rq('GET', 'k')), 'v', 'GET');
is(get('/cmd' . rq('GET', 'nokey')), '(nil)', 'nil');
is(get('/cmd' . rq('INCR', 'n')), ':1', 'integer');
is(get('/cmd' . rq('INCRBY', 'n', '-5')), ':-4', 'negative integer');
is(get('/cmd' . rq('RPUSH', 'l', 'message', 'a', 'b')), ':3', 'RPUSH');
is(get('/cmd' . rq('LRANGE', 'l', '0', '-1')), "*3\nmessage\na\nb",
   'array (shaped like a pub/sub message, on a command connection)');
is(get('/cmd' . rq('LRANGE', 'nolist', '0', '-1')), '*0', 'empty array');
like(get('/cmd' . rq('NOSUCHCOMMAND', 'x')), qr/^-ERR unknown command/,
     'error reply');
is(get('/cmd' . rq('set', 'lower', 'case')), '+OK', 'lower-case command');
is(get('/cmd' . rq('SET', 'empty', '')), '+OK', 'empty argument');
is(get('/cmd' . rq('STRLEN', 'empty')), ':0', 'empty argument stored');

# binary payloads: NUL, CR LF, high bytes, a RESP-looking string
{
    my $bin = "a\0b\r\nc\xff\x00\r\n\$3\r\n*1\r\n";

    is(get('/cmd' . rq('SET', "bin\0key", $bin)), '+OK', 'binary SET');
    is(get('/cmd' . rq('GET', "bin\0key")), $bin, 'binary GET round-trips');
    is(redis({ port => $rport }, 'GET', "bin\0key"), $bin,
       'binary value as stored in Redis');
}

# a big payload: partial writes, the output buffer growing and shrinking,
# a reply split over many reads
{
    my $big = join '', map { chr(int rand 256) } 1 .. 65536;
    $big x= 64;    # 4 MiB

    my ($status, $body) = http('/cmd' . rq('SET', 'big') . '&body=1', body => $big);
    is("$status $body", '200 +OK', 'SET 4 MiB from the request body');
    ok(redis({ port => $rport }, 'GET', 'big') eq $big,
       '4 MiB value as stored in Redis');
    ok(get('/cmd' . rq('GET', 'big')) eq $big, 'GET 4 MiB round-trips');
    is(get('/cmd' . rq('PING')), '+PONG', 'and the connection still works');
}

# pipelining: many concurrent requests, each gets its own reply
{
    my $n = 200;

    for my $i (0 .. $n - 1) {
        redis({ port => $rport }, 'SET', "key$i", "value$i-" . ('x' x $i));
    }

    my @socks = map { http_send($http_port, '/cmd' . rq('GET', "key$_")) } 0 .. $n - 1;

    my $ok = 0;
    for my $i (0 .. $n - 1) {
        my ($status, $body) = http_receive($socks[$i]);
        $ok++ if $status == 200 && $body eq "value$i-" . ('x' x $i);
    }

    is($ok, $n, "$n concurrent commands matched to their replies");
}


###############################################################################
# SELECT, unix socket, AUTH

is(get('/db3' . rq('SET', 'dbkey', 'three')), '+OK', 'SET in db 3');
is(redis({ port => $rport, db => 3 }, 'GET', 'dbkey'), 'three',
   'SELECT: the key is in db 3');
is(redis({ port => $rport }, 'GET', 'dbkey'), undef, 'and not in db 0');

wait_for(sub { log_count(qr/SELECT failed/) }, 5);
is(get('/badselect?state=1'), "down\n", 'SELECT 99: down');
is(log_count(qr/"redis:\/\/127\.0\.0\.1:$rport\/99" is down, reconnecting in \d+ms: SELECT failed: ERR DB index is out of range/),
   1, 'SELECT error logged');

is(get('/unix' . rq('SET', 'ukey', 'via unix')), '+OK', 'unix socket');
is(redis({ port => $rport, db => 2 }, 'GET', 'ukey'), 'via unix',
   'unix socket with ?db=2');

is(get('/authok' . rq('SET', 'akey', 'auth')), '+OK', 'AUTH password');
is(get('/authpct' . rq('GET', 'akey')), 'auth', 'AUTH %-escaped password');
is(get('/authuser' . rq('SET', 'akey4', 'user')), '+OK', 'AUTH user password');
is(redis({ port => $aport, auth => 'sekret', db => 4 }, 'GET', 'akey4'),
   'user', 'AUTH user password, then SELECT 4');

is(get('/authbad?state=1'), "down\n", 'wrong password: down');
is(join(' ', (http('/authbad' . rq('PING')))[0, 1]), "503 down\n",
   'wrong password: commands declined');
sleep 1.5;    # several retries
is(log_count(qr/chat redis: "redis:\/\/:\*\*\*\@127\.0\.0\.1:$aport" is down, reconnecting in \d+ms: AUTH failed: WRONGPASS/),
   1, 'AUTH error logged once, password not logged');
is(log_count(qr/wrong|sekret/), 0, 'no password in the log');


###############################################################################
# pub/sub

wait_for(sub { get('/sub?info=1') =~ /subscribed=1/
               && get('/psub?info=1') =~ /subscribed=1/ }, 5);
like(get('/sub?info=1'), qr/^ups=1 downs=0 subscribed=1 /, 'subscribed');
like(get('/psub?info=1'), qr/^ups=1 downs=0 subscribed=1 /, 'psubscribed');

{
    my $payload = "hello\0\r\nworld\xff";

    is(redis({ port => $rport }, 'PUBLISH', 'chan1', $payload), 2,
       'PUBLISH reaches both subscribers');
    is(get('/cmd' . rq('PUBLISH', 'chan1', 'second')), ':2',
       'PUBLISH through the client');

    wait_for(sub { @{ messages('/sub') } == 2 }, 3);
    is_deeply(messages('/sub'), [['chan1', $payload], ['chan1', 'second']],
              'messages received, binary payload intact');
    is_deeply(messages('/psub'), [['chan1', $payload], ['chan1', 'second']],
              'pattern messages received, with their channel');
}

# commands on the subscriber connection: several channels per SUBSCRIBE,
# UNSUBSCRIBE and PUNSUBSCRIBE without arguments, PING in subscriber mode
{
    get('/sub?clear=1');

    is(get('/sub' . rq('SUBSCRIBE', 'c2', 'c3')), "*3\nsubscribe\nc3\n:3",
       'SUBSCRIBE two channels: the handler gets the last confirmation');
    is(get('/sub' . rq('PING')), "*2\npong\n", 'PING in subscriber mode');

    redis({ port => $rport }, 'PUBLISH', 'c2', 'to c2');
    redis({ port => $rport }, 'PUBLISH', 'c3', 'to c3');
    wait_for(sub { @{ messages('/sub') } == 2 }, 3);
    is_deeply(messages('/sub'), [['c2', 'to c2'], ['c3', 'to c3']],
              'messages on the new channels');

    is(get('/sub' . rq('UNSUBSCRIBE', 'c2', 'c3')),
       "*3\nunsubscribe\nc3\n:1", 'UNSUBSCRIBE two channels');
    is(get('/sub' . rq('PUNSUBSCRIBE')), "*3\npunsubscribe\n(nil)\n:1",
       'PUNSUBSCRIBE without patterns');
    is(get('/sub' . rq('UNSUBSCRIBE')), "*3\nunsubscribe\nchan1\n:0",
       'UNSUBSCRIBE all');

    is(get('/sub' . rq('GET', 'k')), 'v', 'no longer a subscriber: GET works');
    is(get('/sub' . rq('LRANGE', 'l', '0', '-1')), "*3\nmessage\na\nb",
       'a message-shaped reply is a reply again');

    is(get('/sub' . rq('SUBSCRIBE', 'chan1')), "*3\nsubscribe\nchan1\n:1",
       'SUBSCRIBE again');

    get('/sub?clear=1');
}


###############################################################################
# a command that gets no reply: the command timeout fails the connection

{
    wait_for(sub { get('/hang?state=1') eq "up\n" }, 5);

    my $t = time;
    my ($status, $body) = http('/hang' . rq('PING'));
    my $took = time - $t;

    is("$status $body", "502 failed\n", 'no reply: failed');
    ok($took >= 0.45 && $took < 2, "command timeout after ${took}s");
    is(log_count(qr/"redis:\/\/127\.0\.0\.1:$hport" is down, reconnecting in \d+ms: command timed out \(110: /),
       1, 'command timeout logged');
}


###############################################################################
# a reply claiming more elements than any reply of ours has fails the
# connection at once, allocating nothing for them (the old code allocated
# 800 MB and waited for the elements until the command timeout)

{
    wait_for(sub { get('/liar?state=1') eq "up\n" }, 5);

    my $t = time;
    my ($status, $body) = http('/liar' . rq('PING'));
    my $took = time - $t;

    is("$status $body", "502 failed\n", 'array of 100,000,000: failed');
    ok($took < 1.5, "at once, not by the command timeout (${took}s)");
    is(log_count(qr/"redis:\/\/127\.0\.0\.1:$lport" is down, reconnecting in \d+ms: protocol error: Out of memory/),
       1, 'protocol error logged');
}


###############################################################################
# Redis goes away: "down" at once, one line per connection, quiet retries

{
    my $before = () = error_log();

    stop($redis, 'TERM');

    ok(wait_for(sub { (http('/cmd' . rq('PING')))[0] == 503 }, 3),
       'Redis stopped: commands declined');

    my $slow = 0;
    for (1 .. 10) {
        my $t = time;
        my ($status, $body) = http('/cmd' . rq('GET', 'k'));
        $slow++ if $status != 503 || $body ne "down\n" || time - $t > 0.5;
    }
    is($slow, 0, 'every request gets "down" at once');

    is(get('/cmd?state=1'), "down\n", 'state: down');

    sleep 3;    # let the backoff retry a few times

    my @all = error_log();
    my @new = @all[$before .. $#all];

    is(scalar(grep { /"redis:\/\/127\.0\.0\.1:$rport" is down, reconnecting in \d+ms: connection closed by server/ } @new),
       1, 'one "down" line for the command connection');
    is(scalar(grep { /"redis:\/\/127\.0\.0\.1:$rport\/0" is down/ } @new),
       1, 'one "down" line for the subscriber connection');
    is(scalar(grep { /"unix:\Q$unix\E\?db=2" is down/ } @new),
       1, 'one "down" line for the unix socket connection');
    is(scalar(grep { /still down|connect\(\) to .* failed/ } @new), 0,
       'retries are not logged at notice or above');
    is(scalar(grep { /\[(alert|crit|emerg)\]/ } @new), 0,
       'no alert/crit in the log');

    like(get('/sub?info=1'), qr/^ups=1 downs=1 /, 'state handler: down once');
}


###############################################################################
# Redis is back: reconnects by itself, the owner subscribes again

{
    $redis = start_redis(port => $rport, unix => $unix);
    my $t = time;

    ok(wait_for(sub { get('/cmd?state=1') eq "up\n" }, 15),
       'reconnected by itself');
    my $took = time - $t;
    diag(sprintf 'reconnected %.2fs after Redis restarted', $took);
    ok($took < 12, 'within the backoff bound');

    is(get('/cmd' . rq('SET', 'k', 'again')), '+OK', 'commands work again');

    ok(wait_for(sub { get('/sub?info=1') =~ /^ups=2 downs=1 subscribed=2 /
                      && get('/psub?info=1') =~ /subscribed=2 / }, 15),
       'subscribers re-subscribed from the state handler');

    ok(wait_for(sub { get('/unix?state=1') eq "up\n" }, 15),
       'unix socket connection back');

    is(redis({ port => $rport }, 'PUBLISH', 'chan1', 'after restart'), 2,
       'PUBLISH after the restart reaches both subscribers');
    wait_for(sub { @{ messages('/sub') } == 1 }, 3);
    is_deeply(messages('/sub'), [['chan1', 'after restart']],
              'subscriber receives messages again');

    is(log_count(qr/"redis:\/\/127\.0\.0\.1:$rport" is up/), 2,
       'NOTICE when up, once per connection');
}


###############################################################################
# graceful shutdown: cancelable reconnect timers do not hold the worker

{
    my $took = stop($nginx_pid, 'QUIT');
    ok($took < 1, sprintf 'nginx quit gracefully in %.2fs', $took);

    is(log_count(qr/open socket|\[alert\]|\[crit\]|\[emerg\]/), 0,
       'no alert: no socket left open, nothing unexpected');
}

stop($redis, 'TERM');
stop($redis_auth, 'TERM');
stop($liar, 'TERM');

done_testing();
