# Self-test of t/lib/Test/Chat/Nginx.pm with stock nginx (no chat module).

use strict;
use warnings;
use Test::More;
use FindBin ();
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;

# --- http/server snippets, 2 workers, reload ---------------------------------
{
    my $t = Test::Chat::Nginx->new(
        http   => 'map $uri $v { default "one"; }',
        server => 'location = /v { return 200 "$v\n"; }',
        workers => 2,
    );
    ok($t->running, 'nginx running');
    like($t->port, qr/^\d+$/, 'port ' . $t->port);
    isnt($t->port, 1984, 'not the block runner port');
    like($t->servroot, qr{/servroot_\d+_\d+$}, 'private servroot');
    my @w = $t->worker_pids;
    is(scalar @w, 2, 'two workers') or diag(join ',', @w);

    my $r = $t->http_get('/v');
    is($r->{status}, 200, 'GET 200');
    is($r->{body}, "one\n", 'body');
    is($t->http_get('/nope')->{status}, 404, '404 for a missing location');

    ok($t->reload(http => 'map $uri $v { default "two"; }',
                  server => 'location = /v { return 200 "$v\n"; }'),
       'reload with a new config') or diag($t->reload_error);
    my @w2 = $t->worker_pids;
    is(scalar @w2, 2, 'two new workers');
    ok(!grep({ my $o = $_; grep { $_ == $o } @w } @w2), 'all workers replaced');
    is($t->http_get('/v')->{body}, "two\n", 'new config active');

    my $mark = $t->log_mark;
    ok(!$t->reload(server => 'location = /v { bogus_directive; }'),
       'reload with a bad config fails');
    like($t->reload_error, qr/unknown directive "bogus_directive"/, 'reload_error');
    is($t->http_get('/v')->{body}, "two\n", 'old config still serving');
    ok($t->wait_for_log(qr/\[emerg\].*bogus_directive/, since => $mark, timeout => 1),
       'wait_for_log finds the emerg line');
    like($t->error_log, qr/signal 1 \(SIGHUP\) received/, 'error_log content');

    # a killed worker is respawned by the master
    my @cur = $t->worker_pids;
    kill 'KILL', $cur[0];
    my @new = $t->wait_workers(count => 2, exclude => [ $cur[0] ], timeout => 5);
    is(scalar @new, 2, 'worker respawned after SIGKILL');

    my $master = $t->master_pid;
    my $sr = $t->servroot;
    ok($t->stop, 'stop');
    ok(!Test::Chat::Nginx->pid_alive($master), 'master gone');
    ok(!$t->running, 'not running');
    $t->cleanup;
    ok(!-d $sr, 'servroot removed by cleanup');
}

# --- full conf with %%PORT%%, %%PORT_1%% and $TEST_NGINX_* ---------------------
{
    local $ENV{TEST_NGINX_HELLO} = 'hi';
    my $t = Test::Chat::Nginx->new(conf => <<'_EOC_', workers => 1);
%%TEST_GLOBALS%%
events { worker_connections 64; }
http {
    %%TEST_GLOBALS_HTTP%%
    server {
        listen 127.0.0.1:%%PORT%%;
        location / { return 200 "$TEST_NGINX_HELLO main\n"; }
    }
    server {
        listen 127.0.0.1:%%PORT_1%%;
        location / { return 200 "second $TEST_NGINX_SERVER_PORT\n"; }
    }
}
_EOC_
    is($t->http_get('/')->{body}, "hi main\n", 'env substitution and %%PORT%%');
    isnt($t->port(1), $t->port, 'second port differs');
    my $r = $t->http("GET / HTTP/1.0\r\n\r\n", port => $t->port(1));
    is($r->{body}, "second " . $t->port . "\n", '%%PORT_1%% and $TEST_NGINX_SERVER_PORT');
    is(scalar $t->worker_pids, 1, 'one worker');
}

# --- nginx -t ----------------------------------------------------------------
{
    my ($code, $out) = Test::Chat::Nginx->nginx_t(server => 'location / { return 204; }');
    is($code, 0, 'nginx -t ok for a good config') or diag($out);
    ($code, $out) = Test::Chat::Nginx->nginx_t(http => 'no_such_thing on;');
    isnt($code, 0, 'nginx -t fails for a bad config');
    like($out, qr/unknown directive "no_such_thing"/, 'nginx -t output');
}

# --- start failure --------------------------------------------------------------
{
    my $t = eval { Test::Chat::Nginx->new(server => 'listen 127.0.0.1:%%PORT%% bogus_param;') };
    ok(!$t, 'new croaks when nginx cannot start');
    like($@, qr/nginx failed to start/, 'error message');

    $t = Test::Chat::Nginx->new(server => 'location / { return 204; }', start => 0);
    ok(!$t->running, 'start => 0');
    ok($t->start, 'explicit start');
    is($t->http_get('/')->{status}, 204, 'serving');
}
# the last object is stopped and cleaned up automatically (DESTROY / END)

done_testing();
