#!/usr/bin/perl

# Tests src/ngx_chat_pg.c through the test-only probe module
# (ngx_http_pg_probe_module.c) against a private PostgreSQL
# (Test::Chat::Pg): conninfo checks, the schema created on connect (also
# by racing workers, and left alone when an operator created it),
# parameterised queries round-tripping any text, queries in order under
# load, timeouts, wrong password and unknown database, an outage of
# PostgreSQL and the reconnect after it, reload and graceful exit.
#
#   make -C t/pg-client test
#
# TEST_PG_PROBE_MODULE  the probe .so (set by the Makefile)
# TEST_NGINX_BINARY     nginx (default /usr/sbin/nginx)
# TEST_KEEP=1           keep the temporary directory (logs)

use strict;
use warnings;

use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);
use Digest::MD5 qw(md5_hex);
use Encode qw(encode_utf8);
use FindBin;
use lib "$FindBin::Bin/../lib";
use Test::Chat::Pg;
use Test::Chat::Probe;

my $module = $ENV{TEST_PG_PROBE_MODULE}
    or plan skip_all => 'TEST_PG_PROBE_MODULE not set; '
                        . 'run make -C t/pg-client test';
my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';

plan skip_all => 'no PostgreSQL server (apt-get install postgresql)'
    unless Test::Chat::Pg->available;

my $dir = probe_dir('pg-probe');


###############################################################################
# helpers

# "?sql=...&p=...": a query and its parameters (undef: NULL)
sub qry {
    my ($sql, @params) = @_;
    return '?sql=' . esc($sql)
           . join '', map { defined $_ ? '&p=' . esc($_) : '&null=1' }
                          @params;
}

my $http_port;

sub nginx_conf {
    my ($file, $http_port, $workers, $locations) = @_;

    open my $cf, '>', $file or die "$file: $!";
    print $cf <<"EOF";
load_module $module;

worker_processes $workers;
daemon off;
master_process on;
worker_shutdown_timeout 30s;
pid $file.pid;
error_log $dir/logs/error.log info;

events {
    worker_connections 1024;
}

http {
    access_log off;
    large_client_header_buffers 4 1m;

    server {
        listen 127.0.0.1:$http_port;

$locations
    }
}
EOF
    close $cf;
}

sub state_is {
    my ($loc, $state, $timeout) = @_;
    return wait_for(sub { get("$loc?state=1") eq "$state\n" }, $timeout);
}


###############################################################################
# PostgreSQL

my $pg = Test::Chat::Pg->start(password => 'secret', ssl => 1);
my $pgport = $pg->port;

ok($pg->running, "PostgreSQL on 127.0.0.1:$pgport");

# TLS (sslmode=require) in a database of its own, for telling the logs apart
$pg->psql('CREATE DATABASE tls OWNER chat', db => 'postgres') if $pg->ssl;


###############################################################################
# configuration: nginx -t checks conninfo strings with file:line

my $bad = 0;

for my $case (
    ['host=127.0.0.1 port',
     qr/invalid PostgreSQL conninfo: missing "=" after "port" in connection info string/],
    ['host=127.0.0.1 nosuch=1',
     qr/invalid PostgreSQL conninfo: invalid connection option "nosuch"/],
    ["host='127.0.0.1",
     qr/invalid PostgreSQL conninfo: unterminated quoted string in connection info string/],
    ['postgresql://127.0.0.1:5432/chat?nosuch=1',
     qr/invalid PostgreSQL conninfo: invalid URI query parameter: "nosuch"/],
    ['host=127.0.0.1 port=99999', qr/invalid PostgreSQL conninfo: invalid port/],
    ['host=a,b port=5432,x', qr/invalid PostgreSQL conninfo: invalid port/],
    ['host=127.0.0.1 connect_timeout=soon',
     qr/invalid PostgreSQL conninfo: invalid connect_timeout/],
)
{
    my ($conninfo, $re) = @$case;
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
            pg_probe "$conninfo";
        }
    }
}
EOF
    close $f;

    my $out = `$nginx -t -p $dir/ -e $dir/bad.log -c $conf 2>&1`;
    like($out, qr/\[emerg\].*$re in \Q$conf\E:8/, "config: $conninfo");
}

{
    # good ones parse; a host name gets a warning (blocking lookups)
    my $conf = "$dir/good.conf";
    open my $f, '>', $conf or die;
    print $f <<"EOF";
load_module $module;
error_log $dir/bad.log;
pid $dir/bad.pid;
events { }
http {
    server {
        location /a { pg_probe "host=127.0.0.1 port=5432 dbname=chat"; }
        location /b { pg_probe "postgresql://u:p%40ss\@127.0.0.1:5433/db"; }
        location /c { pg_probe "host=/var/run/postgresql user=x"; }
        location /d { pg_probe "host=localhost connect_timeout=1"; }
        location /e { pg_probe "host=db.example.com hostaddr=10.0.0.1"; }
        location /f { pg_probe "host=::1,127.0.0.1 port=1,2"; }
        location /g { pg_probe ""; }
        location /h { pg_probe "host=db.example.com"; }
    }
}
EOF
    close $f;

    my $out = `$nginx -t -p $dir/ -e $dir/bad.log -c $conf 2>&1`;
    like($out, qr/test is successful/, 'config: good conninfo strings');
    like($out, qr/\[warn\].*chat postgres: host "db\.example\.com" is looked up by libpq with a blocking call.* in \Q$conf\E:14/,
         'config: a host name is warned about');
    is(scalar(() = $out =~ /\[warn\]/g), 1, 'config: only that one');
}


###############################################################################
# nginx with a probe per case

$http_port = http_port(free_port());
my $refused_port = free_port();

# accepts connections (the kernel does) but never answers
my $hole = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                 Listen => 128, ReuseAddr => 1) or die;
my $hole_port = $hole->sockport;

mkdir "$dir/logs";

my $ci = $pg->conninfo(application_name => 'probe-q', sslmode => 'disable');
my $ci_tls = $pg->conninfo(application_name => 'probe-tls',
                           sslmode => 'require', dbname => 'tls');
my $ci_unix = $pg->conninfo(host => $pg->socket_dir,
                            application_name => 'probe-unix',
                            client_encoding => 'LATIN1');
my $ci_badpw = $pg->conninfo(password => 'wrong');
my $ci_nodb = $pg->conninfo(dbname => 'nosuch');
my $ci_refused = $pg->conninfo(port => $refused_port);
my $ci_hole = $pg->conninfo(port => $hole_port);

nginx_conf("$dir/nginx.conf", $http_port, 1, <<"EOF");
        location /q { pg_probe "$ci" query_timeout=1s; }
        location /unix { pg_probe "$ci_unix"; }
        location /badpw { pg_probe "$ci_badpw"; }
        location /nodb { pg_probe "$ci_nodb"; }
        location /refused { pg_probe "$ci_refused"; }
        location /hole { pg_probe "$ci_hole" connect_timeout=1s; }
        location /tls { pg_probe "$ci_tls"; }
EOF

my $nginx_pid = spawn('nginx', $nginx, '-p', "$dir/", '-e',
                      "$dir/logs/error.log", '-c', "$dir/nginx.conf");

wait_for(sub {
    IO::Socket::INET->new(PeerAddr => "127.0.0.1:$http_port", Timeout => 1)
}, 10) or BAIL_OUT('nginx did not start');

my $label = qr/chat\@127\.0\.0\.1:$pgport\/chat/;
my $label_unix = qr/chat\@\Q${\ $pg->socket_dir }\E:$pgport\/chat/;
my $label_tls = qr/chat\@127\.0\.0\.1:$pgport\/tls/;


###############################################################################
# up, and the schema is there

ok(state_is('/q', 'up', 10), 'connected over TCP');
ok(state_is('/unix', 'up', 10), 'connected over the unix socket');

is(scalar $pg->psql("SELECT to_regclass('messages')::text || ' ' "
                    . "|| to_regclass('messages_room_created')::text"),
   'messages messages_room_created', 'table and index created on connect');

is(join(';', $pg->psql(
       "SELECT column_name, data_type, is_nullable, "
       . "column_default IS NOT NULL FROM information_schema.columns "
       . "WHERE table_name = 'messages' ORDER BY ordinal_position")),
   'id|text|NO|f;zone|text|NO|t;room_id|text|NO|f;user_id|text|NO|f;'
   . 'content|text|NO|f;created_at|timestamp with time zone|NO|t',
   'columns as SPEC 7, and zone');

is(scalar $pg->psql(
       "SELECT indexdef FROM pg_indexes WHERE indexname = "
       . "'messages_room_created'"),
   'CREATE INDEX messages_room_created ON public.messages USING btree '
   . '(room_id, created_at)', 'index on (room_id, created_at)');

is(scalar $pg->psql("SELECT a.attname FROM pg_index i JOIN pg_attribute a "
                    . "ON a.attrelid = i.indrelid "
                    . "AND a.attnum = ANY(i.indkey) "
                    . "WHERE i.indrelid = 'messages'::regclass "
                    . "AND i.indisprimary"),
   'id', 'id is the primary key');

is(log_count(qr/\[notice\].*chat postgres: "$label" is up/), 1,
   'NOTICE "is up" once');
is(log_count(qr/\[notice\].*chat postgres: "$label_unix" is up/), 1,
   'NOTICE "is up" once (unix socket)');
is(get('/unix' . qry('SELECT current_user, inet_server_port() IS NULL')),
   "chat|t\n", 'the unix socket connection is one');
is(get('/q' . qry('SHOW client_encoding')), "UTF8\n",
   'client_encoding UTF8');
is(get('/unix' . qry('SHOW client_encoding')), "UTF8\n",
   'client_encoding UTF8, over the conninfo\'s LATIN1');


###############################################################################
# parameterised queries round-trip any text

is(get('/q' . qry('SELECT $1::text, $2::int + 1, $3::text IS NULL',
                'a', '41', undef)),
   "a|42|t\n", 'parameters, NULL');

is(get('/q' . qry('SELECT 1 WHERE false')), '', 'no rows');
is(get('/q' . qry("SELECT 'x', NULL, ''")), "x|\\N|\n", 'NULL and empty');

my @texts = (
    q{it's},
    q{say "hi"},
    q{back\slash \\ and \\\\ two and \n not a newline},
    q{'); DROP TABLE messages; --},
    q{Robert'); DELETE FROM messages WHERE (''='},
    q{$1 $2 :name ? %s %d {}},
    q{$$ dollar $q$ quoted $q$},
    "line1\nline2\r\n\ttabbed",
    "h\x{e9}llo w\x{f6}rld \x{2713} \x{65e5}\x{672c}\x{8a9e} \x{1f389}",
    '%41 + & = ? # /',
    '',
    'x' x 100_000,
);

my $i = 0;

for my $text (@texts) {
    $i++;
    my $bytes = utf8::is_utf8($text) ? encode_utf8($text) : $text;
    my $name = length $bytes > 40 ? 'long text' : "text $i";

    is(get('/q' . qry('INSERT INTO messages (id, room_id, user_id, content) '
                    . 'VALUES ($1, $2, $3, $4)',
                    "rt-$i", "room \x{2764}", q{u'ser}, $text)),
       "OK INSERT 0 1\n", "insert: $name");

    my ($status, $body) = http('/q' . qry('SELECT content FROM messages '
                                        . 'WHERE id = $1', "rt-$i"));
    ok($status == 200 && $body eq "$bytes\n", "select: $name");

    is(scalar $pg->psql("SELECT md5(content) || ' ' || md5(room_id) "
                        . "|| ' ' || user_id FROM messages "
                        . "WHERE id = 'rt-$i'"),
       md5_hex($bytes) . ' ' . md5_hex(encode_utf8("room \x{2764}"))
       . " u'ser",
       "stored as sent: $name");
}

is(scalar $pg->psql('SELECT count(*) FROM messages'), scalar @texts,
   'SQL-looking text did nothing');

{
    # lengths given, values not NUL-terminated (garbage after each)
    is(get('/q' . qry('SELECT $1::text || \'|\' || length($2)', 'abc', 'de')
           . '&lengths=1'),
       "abc|2\n", 'values with lengths');

    is(get('/q' . qry('SELECT length($1)', 'y' x 300_000)), "300000\n",
       'a 300k parameter');

    my ($status, $body) = http('/q' . qry('SELECT repeat($1, 200000)',
                                        'abcde'));
    ok($status == 200 && $body eq ('abcde' x 200000) . "\n",
       'a 1m result');

    ($status, $body) = http('/q' . qry('SELECT g, md5(g::text) '
                                     . 'FROM generate_series(1, 20000) g'));
    my @rows = split /\n/, $body;
    ok($status == 200 && @rows == 20000 && $rows[-1] eq '20000|'
       . md5_hex('20000'), '20000 rows');
}

{
    # errors are results: the connection stays
    my ($status, $body) = http('/q' . qry('SELECT bogus'));
    is("$status $body", "500 error 42703: column \"bogus\" does not exist\n",
       'SQL error');

    ($status, $body) = http('/q' . qry('INSERT INTO messages (id, room_id, '
                                     . 'user_id, content) VALUES '
                                     . '($1, $2, $3, $4)',
                                     'rt-1', 'r', 'u', 'c'));
    like("$status $body", qr/^500 error 23505: duplicate key/,
         'unique violation');

    ($status, $body) = http('/q' . qry('SELECT 1; SELECT 2'));
    like("$status $body", qr/^500 error 42601: cannot insert multiple/,
         'one statement per query');

    ($status, $body) = http('/q' . qry('SELECT $1::int', 'x'));
    like("$status $body", qr/^500 error 22P02: invalid input syntax/,
         'bad parameter');

    is(get('/q' . qry('SELECT 7')), "7\n", 'still up after the errors');
    is(log_count(qr/\[error\]/), log_count(qr/\[error\].*chat postgres:.*(password authentication|"nosuch"|:$refused_port\/|:$hole_port\/)/),
       'no errors logged for SQL errors');
}


###############################################################################
# the same over TLS: libpq reads through OpenSSL, which may keep part of a
# record that nginx's edge-triggered events know nothing about

SKIP: {
    skip 'no TLS (openssl missing)', 8 unless $pg->ssl;

    ok(state_is('/tls', 'up', 10), 'TLS: up');
    is(get('/tls' . qry('SELECT ssl FROM pg_stat_ssl '
                        . 'WHERE pid = pg_backend_pid()')),
       "t\n", 'TLS: in use');

    my $ok = 0;
    $i = 0;

    for my $text (@texts) {
        $i++;
        my $bytes = utf8::is_utf8($text) ? encode_utf8($text) : $text;

        my $r1 = get('/tls' . qry('INSERT INTO messages (id, room_id, '
                                  . 'user_id, content) VALUES '
                                  . '($1, $2, $3, $4)',
                                  "tls-$i", 'r', 'u', $text));
        my ($status, $body) = http('/tls' . qry('SELECT content FROM '
                                                . 'messages WHERE id = $1',
                                                "tls-$i"));
        $ok++ if $r1 eq "OK INSERT 0 1\n" && $status == 200
                 && $body eq "$bytes\n";
    }

    is($ok, scalar @texts, 'TLS: texts round-trip');

    is(get('/tls' . qry('SELECT length($1)', 'y' x 300_000)), "300000\n",
       'TLS: a 300k parameter');

    for my $n (1 .. 2) {
        my ($status, $body) = http('/tls' . qry('SELECT repeat($1, 200000)',
                                                'abcde'));
        ok($status == 200 && $body eq ('abcde' x 200000) . "\n",
           "TLS: a 1m result ($n)");
    }

    my ($status, $body) = http('/tls' . qry('SELECT g, md5(g::text) FROM '
                                            . 'generate_series(1, 20000) g'));
    my @rows = split /\n/, $body;
    ok($status == 200 && @rows == 20000
       && $rows[-1] eq '20000|' . md5_hex('20000'), 'TLS: 20000 rows');

    my @socks = map {
        http_send($http_port, '/tls' . qry('SELECT $1::int * 2', $_))
    } 1 .. 100;

    $ok = 0;
    for my $n (1 .. 100) {
        my ($status, $body) = http_receive($socks[$n - 1]);
        $ok++ if $status == 200 && $body eq $n * 2 . "\n";
    }

    is($ok, 100, 'TLS: 100 concurrent queries');
}


###############################################################################
# queries run one at a time, in the order they were queued

{
    $pg->psql('CREATE SEQUENCE probe_seq; ALTER SEQUENCE probe_seq OWNER TO chat');
    $pg->psql('GRANT USAGE ON SEQUENCE probe_seq TO chat');

    # a slow one first, so that the others queue behind it
    my @socks = (http_send($http_port, '/q' . qry('SELECT pg_sleep(0.3), '
                                                . "nextval('probe_seq')")));
    push @socks, http_send($http_port, '/q' . qry("SELECT nextval('probe_seq')"))
        for 1 .. 200;

    my (%by_seq, $ok);
    $ok = 0;

    for my $s (@socks) {
        my ($status, $body, $head) = http_receive($s);
        my ($seq) = $head =~ /^X-Seq: (\d+)/mi;
        $ok++ if $status == 200 && defined $seq;
        my ($val) = $body =~ /(\d+)\n\z/;
        $by_seq{$seq // 0} = $val // -1;
    }

    is($ok, 201, '201 concurrent queries answered');

    my @vals = map { $by_seq{$_} } sort { $a <=> $b } keys %by_seq;
    my $ordered = 1;
    for my $k (1 .. $#vals) {
        $ordered = 0 unless $vals[$k] == $vals[$k - 1] + 1;
    }
    ok($ordered && @vals == 201, 'run in the order queued');
}


###############################################################################
# query timeout: the connection is failed and comes back by itself

{
    my $t = time;
    my $s1 = http_send($http_port, '/q' . qry('SELECT pg_sleep(5)'));
    sleep 0.1;
    my $s2 = http_send($http_port, '/q' . qry('SELECT 2'));

    my ($status1, $body1) = http_receive($s1);
    my ($status2, $body2) = http_receive($s2);
    my $took = time - $t;

    is("$status1 $body1", "502 failed\n", 'query timed out');
    is("$status2 $body2", "502 failed\n", 'the one queued behind it too');
    ok($took > 0.9 && $took < 2.5, "after the query timeout (${took}s)");

    is(log_count(qr/\[error\].*chat postgres: query timed out \($label, reconnecting in \d+ms\)/),
       1, 'ERR "query timed out"');

    ok(state_is('/q', 'up', 5), 'up again by itself');
    is(get('/q' . qry('SELECT 3')), "3\n", 'and working');
}


###############################################################################
# wrong password, unknown database, refused, no answer: down, one ERR each
# with libpq's message, retried quietly

{
    is(get('/badpw?state=1'), "down\n", 'wrong password: down');
    is(get('/badpw' . qry('SELECT 1')), "HTTP 503: down\n",
       'wrong password: declined');
    is(get('/nodb?state=1'), "down\n", 'unknown database: down');
    is(get('/refused?state=1'), "down\n", 'refused: down');

    my $pw = qr/chat postgres: connection failed: FATAL:  password authentication failed for user "chat".* \(chat\@127\.0\.0\.1:$pgport\/chat, reconnecting in \d+ms\)/;
    my $db = qr/chat postgres: connection failed: FATAL:  database "nosuch" does not exist \(chat\@127\.0\.0\.1:$pgport\/nosuch, reconnecting in \d+ms\)/;
    my $rf = qr/chat postgres: connection failed: .*Connection refused.* \(chat\@127\.0\.0\.1:$refused_port\/chat, reconnecting in \d+ms\)/;
    my $to = qr/chat postgres: connection timed out \(chat\@127\.0\.0\.1:$hole_port\/chat, reconnecting in \d+ms\)/;

    is(log_count(qr/\[error\].*$pw/), 1, 'wrong password: one ERR line');
    is(log_count(qr/\[error\].*$db/), 1, 'unknown database: one ERR line');
    is(log_count(qr/\[error\].*$rf/), 1, 'refused: one ERR line');
    is(log_count(qr/\[error\].*$to/), 1, 'no answer: one ERR line');

    ok(log_count(qr/\[info\].*$pw/) >= 2, 'wrong password: retried (INFO)');
    ok(log_count(qr/\[info\].*$rf/) >= 2, 'refused: retried (INFO)');

    is(get('/badpw?info=1'), "ups=0 downs=1 queries=1\n",
       'wrong password: state handler told once');

    # backoff: doubling from 200ms, +-25%, at most 10s
    my @delays = map { /\(chat\@127\.0\.0\.1:$refused_port\/chat, reconnecting in (\d+)ms\)/ ? $1 : () }
                 error_log();
    my $b = 200;
    my $in = 1;
    for my $d (@delays) {
        $in = 0 unless $d >= $b * 0.75 && $d <= $b * 1.25;
        $b = $b * 2 > 10000 ? 10000 : $b * 2;
    }
    ok(@delays >= 3 && $in, 'backoff doubles from 200ms with jitter: '
                            . join(' ', @delays));
}


###############################################################################
# PostgreSQL stops: requests fail fast, one ERR; it starts: reconnected

{
    my $errors = log_count(qr/\[error\]/);

    # one in flight when the server goes away
    my $s = http_send($http_port, '/q' . qry('SELECT pg_sleep(0.8), 1'));
    sleep 0.3;

    my $t = time;
    $pg->stop;
    diag(sprintf 'pg_ctl stop took %.2fs', time - $t);

    my ($status, $body) = http_receive($s, 10);
    ok($status == 502 || $status == 200,
       "the query in flight is answered ($status)");

    $t = time;
    ($status, $body) = http('/q' . qry('SELECT 1'), 5);
    my $took = time - $t;
    is("$status $body", "503 down\n", 'then declined');
    ok($took < 0.5, "at once (${took}s)");

    is(get('/q?state=1'), "down\n", 'reported down');
    is(get('/unix?state=1'), "down\n", 'reported down (unix socket)');

    sleep 2;    # a few quiet attempts

    my @errors = grep { /\[error\]/ } error_log();
    splice @errors, 0, $errors;
    is(scalar(grep { /\($label,/ } @errors), 1,
       'one ERR line for the outage') or diag(@errors);
    like((grep { /\($label,/ } @errors)[0] // '',
         qr/chat postgres: connection lost: FATAL:  terminating connection due to administrator command.* \($label, reconnecting in \d+ms\)/,
         "with the server's message");
    is(scalar(grep { /\($label_unix,/ } @errors), 1,
       'one ERR line for the outage (unix socket)');

    ok(log_count(qr/\[info\].*chat postgres: connection failed: .*\($label, reconnecting/) >= 2,
       'reconnect attempts at INFO');

    like(get('/q?info=1'), qr/^ups=2 downs=2 /,
         'state handler: down once per outage');

    $t = time;
    $pg->start_again;

    ok(state_is('/q', 'up', 15), 'reconnected by itself');
    $took = time - $t;
    ok($took < 8, sprintf 'within %.1fs', $took);
    ok(state_is('/unix', 'up', 15), 'reconnected (unix socket)');
    ok(!$pg->ssl || state_is('/tls', 'up', 15), 'reconnected (TLS)');

    is(get('/q' . qry('SELECT count(*) FROM messages')), @texts . "\n",
       'queries work again');
    is(log_count(qr/\[notice\].*chat postgres: "$label" is up/), 3,
       'NOTICE "is up" again');
}


###############################################################################
# reload: new workers connect, the old ones close their connections

{
    my $count = sub {
        scalar $pg->psql("SELECT count(*) FROM pg_stat_activity "
                         . "WHERE application_name = 'probe-q'");
    };

    is($count->(), 1, 'one connection');

    kill 'HUP', $nginx_pid;

    ok(wait_for(sub { log_count(qr/chat postgres: "$label" is up/) >= 4 },
                10), 'the new worker is up');
    ok(wait_for(sub { $count->() == 1 }, 10),
       'the old connection is closed');
    is(get('/q' . qry('SELECT 5')), "5\n", 'queries after reload');
}


###############################################################################
# graceful exit waits for a query in flight, then closes

{
    my $s = http_send($http_port, '/q' . qry('SELECT pg_sleep(0.7), 9'));
    sleep 0.2;

    my $took = stop($nginx_pid, 'QUIT');
    my ($status, $body) = http_receive($s, 5);

    is("$status $body", "200 |9\n", 'the query in flight completed');
    ok($took > 0.3 && $took < 5, "nginx exited (${took}s)");

    ok(wait_for(sub {
           $pg->psql("SELECT count(*) FROM pg_stat_activity "
                     . "WHERE application_name LIKE 'probe-%'") == 0
       }, 5), 'connections closed');

    my @bad = grep { /\[(alert|crit|emerg)\]|segfault|signal 11/ }
              error_log();
    is(scalar @bad, 0, 'no alerts or crashes') or diag(@bad);
}


###############################################################################
# workers racing to create the schema; an operator's schema left alone

{
    $pg->psql('CREATE DATABASE race OWNER chat', db => 'postgres');

    my $port = free_port();
    my $log = "$dir/logs/error.log";
    my $before = () = error_log();

    my $ci_race = $pg->conninfo(dbname => 'race',
                                application_name => 'probe-race');

    nginx_conf("$dir/race.conf", $port, 8, <<"EOF");
        location /q { pg_probe "$ci_race"; }
EOF

    my $pid = spawn('race', $nginx, '-p', "$dir/", '-e', $log, '-c',
                    "$dir/race.conf");

    my $up = qr/chat postgres: "chat\@127\.0\.0\.1:$pgport\/race" is up/;
    my $ups = 8;

    for my $round (1 .. 3) {
        ok(wait_for(sub { log_count($up) >= $ups }, 15),
           "race $round: 8 workers up");

        # drop it and reload: 8 new workers create it at once
        $pg->psql('DROP TABLE messages', db => 'race');
        $ups += 8;
        kill 'HUP', $pid;
    }

    ok(wait_for(sub { log_count($up) >= $ups }, 15), 'race: last round up');

    my @lines = error_log();
    splice @lines, 0, $before;
    my @errors = grep { /\[(error|alert|crit|warn)\]/ } @lines;
    is(scalar @errors, 0, 'no errors from racing workers') or diag(@errors);

    is(scalar $pg->psql("SELECT to_regclass('messages')::text", db => 'race'),
       'messages', 'the table is there');

    stop($pid, 'QUIT');
}

{
    # an operator created the schema (conf-examples/schema.sql) for a role
    # that may only read and write: nothing to create, no error
    my $schema = "$FindBin::Bin/../../conf-examples/schema.sql";

    $pg->psql('CREATE DATABASE ops', db => 'postgres');
    $pg->psql('CREATE DATABASE ops2', db => 'postgres');
    $pg->psql("CREATE ROLE writer LOGIN PASSWORD 'w'", db => 'postgres');

    open my $f, '<', $schema or die "$schema: $!";
    my $sql = do { local $/; <$f> };
    close $f;

    $pg->psql($sql, db => 'ops');
    $pg->psql('GRANT SELECT, INSERT ON messages TO writer', db => 'ops');

    # ... one without the indexes
    $pg->psql('CREATE TABLE messages (id text PRIMARY KEY, zone text NOT '
              . "NULL DEFAULT '', room_id text "
              . 'NOT NULL, user_id text NOT NULL, content text NOT NULL, '
              . 'created_at timestamptz NOT NULL DEFAULT now()); '
              . 'GRANT SELECT, INSERT ON messages TO writer', db => 'ops2');

    # ... and one of an earlier version, without the zone column, which
    # this role may not migrate
    $pg->psql('CREATE DATABASE ops3', db => 'postgres');
    $pg->psql('CREATE TABLE messages (id text PRIMARY KEY, room_id text '
              . 'NOT NULL, user_id text NOT NULL, content text NOT NULL, '
              . 'created_at timestamptz NOT NULL DEFAULT now()); '
              . 'CREATE INDEX messages_room_created '
              . 'ON messages (room_id, created_at); '
              . 'GRANT SELECT, INSERT ON messages TO writer', db => 'ops3');

    for my $db ('ops', 'ops2', 'ops3') {
        $pg->psql('REVOKE CREATE ON SCHEMA public FROM PUBLIC', db => $db);
    }

    my $port = free_port();
    my $before = () = error_log();

    my $ci_ops = $pg->conninfo(dbname => 'ops', user => 'writer',
                               password => 'w');
    my $ci_ops2 = $pg->conninfo(dbname => 'ops2', user => 'writer',
                                password => 'w');
    my $ci_ops3 = $pg->conninfo(dbname => 'ops3', user => 'writer',
                                password => 'w');

    nginx_conf("$dir/ops.conf", $port, 1, <<"EOF");
        location /ops { pg_probe "$ci_ops"; }
        location /ops2 { pg_probe "$ci_ops2"; }
        location /ops3 { pg_probe "$ci_ops3"; }
EOF

    my $pid = spawn('ops', $nginx, '-p', "$dir/", '-e',
                    "$dir/logs/error.log", '-c', "$dir/ops.conf");

    my $saved = http_port();
    http_port($port);

    wait_for(sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1)
    }, 10);

    ok(state_is('/ops', 'up', 10), "operator's schema: up");
    is(get('/ops' . qry('INSERT INTO messages (id, room_id, user_id, content) '
                      . 'VALUES ($1, $2, $3, $4)', 'o1', 'r', 'u', 'c')),
       "OK INSERT 0 1\n", "operator's schema: insert");

    ok(state_is('/ops2', 'up', 10), 'no index, no privilege: up anyway');

    ok(wait_for(sub { grep { /ops3/ } error_log() }, 10),
       'no zone column, no privilege: logged');
    is(state_is('/ops3', 'down', 1) ? 'down' : 'not down', 'down',
       'no zone column, no privilege: down');

    my @lines = error_log();
    splice @lines, 0, $before;
    my @errors = grep { /\[(error|alert|crit)\]/ && !m{/ops3[,)]} } @lines;
    is(scalar @errors, 0, 'no errors') or diag(@errors);

    is(scalar(grep { /\[warn\].*chat postgres: WARNING:  table messages lacks index messages_room_created, messages_zone_room_created: permission denied for schema public \(writer\@127\.0\.0\.1:$pgport\/ops2\)/ }
              @lines), 1, 'a warning about the missing indexes')
        or diag(grep { /warn/ } @lines);

    ok((grep { /\[error\].*chat postgres: schema creation failed: ERROR:  table messages has no column zone \(permission denied for schema public\), its owner must add it: ALTER TABLE messages ADD COLUMN zone text NOT NULL DEFAULT '' .*\/ops3[,)]/ }
        @lines), 'no zone column, no privilege: an [error] naming the ALTER')
        or diag(grep { /ops3/ } @lines);

    http_port($saved);
    stop($pid, 'QUIT');
}


###############################################################################
# a connection attempt that hangs fails queries queued while connecting

{
    my $port = free_port();
    nginx_conf("$dir/hole.conf", $port, 1, <<"EOF");
        location /hole { pg_probe "$ci_hole" connect_timeout=1s; }
EOF

    my $pid = spawn('hole', $nginx, '-p', "$dir/", '-e',
                    "$dir/logs/error.log", '-c', "$dir/hole.conf");

    wait_for(sub {
        IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port", Timeout => 1)
    }, 10);

    my $t = time;
    my ($status, $body) = http_receive(http_send($port,
                                                 '/hole' . qry('SELECT 1')));
    my $took = time - $t;

    is("$status $body", "502 failed\n", 'queued while connecting: failed');
    ok($took > 0.5 && $took < 2, "by the connect timeout (${took}s)");

    ($status, $body) = http_receive(http_send($port, '/hole' . qry('SELECT 1')));
    is("$status $body", "503 down\n", 'then declined');

    my $exit = stop($pid, 'QUIT');
    ok($exit < 3, "a worker reconnecting exits at once (${exit}s)");
}

$pg->stop;

done_testing();
