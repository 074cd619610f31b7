# Meta-test of the clean-room Test::Nginx::Socket runner in t/runner: runs
# small generated test files in a child perl (own servroot and port) and
# checks their TAP output: failures are really reported, the plan counting
# stays consistent when checks fail, and some less common features work.
# Stock nginx only.  When the suite runs under the real Test::Nginx (make
# test-real), the file skips itself: what it checks is the clean-room one.

use strict;
use warnings;
use Test::More;
use FindBin ();
use File::Temp ();
use IO::Socket::INET ();

# the Test::Nginx::Socket this suite run uses: the first one in @INC
require Test::Nginx::Socket;

{
    no warnings 'once';
    plan skip_all => 'meta-test of the clean-room runner (t/runner); the '
                     . "real Test::Nginx is loaded ($INC{'Test/Nginx/Socket.pm'})"
        unless $Test::Nginx::Socket::CleanRoom;
}

my $lib = "$FindBin::Bin/runner";
my $tmp = File::Temp->newdir('runner-meta-XXXXXX', TMPDIR => 1);

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Listen => 1, Proto => 'tcp') or die $!;
    my $p = $s->sockport;
    close $s;
    return $p;
}

my $n = 0;
# run a test file body; returns { plan, ok => [names], not_ok => [names],
# skip => n, out, exit }
sub run_t {
    my ($code, %env) = @_;
    $n++;
    my $file = "$tmp/t$n.t";
    open my $fh, '>', $file or die $!;
    print $fh $code;
    close $fh;
    local $ENV{TEST_NGINX_SERVROOT} = "$tmp/servroot$n";
    local $ENV{TEST_NGINX_SERVER_PORT} = free_port();
    local @ENV{ keys %env } = values %env;
    my $out = `$^X -I$lib $file 2>&1`;
    my $exit = $? >> 8;
    my %r = (out => $out, exit => $exit, ok => [], not_ok => [], skip => 0);
    for (split /\n/, $out) {
        $r{plan} = $1 if /^1\.\.(\d+)/;
        if (/^ok \d+ # skip/) { $r{skip}++; next }
        push @{ $r{ok} }, $1 if /^ok \d+ - (.*)/;
        push @{ $r{not_ok} }, $1 if /^not ok \d+ - (.*)/;
    }
    $r{ran} = @{ $r{ok} } + @{ $r{not_ok} } + $r{skip};
    return \%r;
}

my $head = <<'_EOC_';
use Test::Nginx::Socket;
repeat_each(2);
plan tests => repeat_each() * (blocks() * 2 + %EXTRA%);
run_tests();
__DATA__
_EOC_

sub file_with {
    my ($extra, $data) = @_;
    (my $h = $head) =~ s/%EXTRA%/$extra/;
    return $h . $data;
}

# --- failures are failures, and the plan still adds up ------------------------
# checks per repetition: T1 2, T2 3, T3 3, T4 2 (died + error_log),
# T5 3, T6 2  =>  blocks() * 2 + 3
{
    my $r = run_t(file_with(3, <<'_EOT_'));

=== TEST 1: wrong body
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a
--- response_body
b



=== TEST 2: wrong status and a missing header
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a
--- error_code: 404
--- response_headers
X-Missing: yes
--- response_body
a



=== TEST 3: error_log pattern absent, no_error_log pattern present
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /nothere
--- error_code: 404
--- error_log
this text is not in the log
--- no_error_log
[error]



=== TEST 4: must_die but nginx starts
--- config
    location = /a { return 200 "a\n"; }
--- must_die
--- error_log
something



=== TEST 5: unexpected start failure
--- config
    no_such_directive_here;
--- request
GET /a
--- response_body
a
--- no_error_log
[warn]



=== TEST 6: timeout without abort
--- user_files eval
[["big.txt", "a" x 3000]]
--- config
    location = /big.txt { limit_rate_after 1000; limit_rate 1; }
--- request
GET /big.txt
--- timeout: 0.3
--- response_body_like: ^a+$
_EOT_
    is($r->{plan}, 2 * (6 * 2 + 3), "plan as written");
    is($r->{ran}, $r->{plan}, 'as many results as planned, although checks failed')
        or diag($r->{out});
    my @nok = @{ $r->{not_ok} };
    my %has = map { $_ => 1 } @nok;
    ok($has{'TEST 1: wrong body - response_body - response is expected (req 0)'}, 'wrong body fails');
    ok($has{'TEST 2: wrong status and a missing header - status code ok (req 1)'}, 'wrong status fails');
    ok($has{'TEST 2: wrong status and a missing header - header X-Missing ok (req 0)'}, 'missing header fails');
    ok(scalar(grep { /TEST 3: .*"this text is not in the log" should match/ } @nok) == 2, 'absent error_log pattern fails');
    ok(scalar(grep { /TEST 3: .*"\[error\]" should not match/ } @nok) == 2, 'present no_error_log pattern fails');
    ok($has{'TEST 4: must_die but nginx starts - nginx must die but it started (req 0)'}, 'must_die fails when nginx starts');
    ok($has{'TEST 5: unexpected start failure - nginx failed to start'}, 'start failure fails');
    like($r->{out}, qr/unknown directive "no_such_directive_here"/, 'start failure shows nginx stderr');
    is($r->{skip}, 2 * 3 - 1, 'rest of the failed block skipped');
    ok($has{'TEST 6: timeout without abort - status code ok (req 0)'}, 'timeout fails');
    like($r->{out}, qr/client socket timed out/, 'timeout diagnostic');
    isnt($r->{exit}, 0, 'non-zero exit');
    my @passing = grep { !/TEST 1:/ && !/TEST 2:/ && !/TEST 3:/ && !/TEST 4:/ && !/TEST 5:/ && !/TEST 6:/ } @nok;
    is_deeply(\@passing, [], 'no unexpected failure names');
}

# --- counting helper agrees with what is emitted --------------------------------
{
    my $r = run_t(<<'_EOT_');
use Test::Nginx::Socket 'no_plan';
repeat_each(3);
my $sum = 0;
add_block_preprocessor(sub {
    my $b = shift;
    $b->set_value(request => "GET /a") unless defined $b->request;
});
run_tests();
for my $b (blocks()) { $sum += Test::Nginx::Socket::block_test_count($b) }
print "# COUNT ", $sum * repeat_each(), "\n";
__DATA__

=== TEST 1: request added by a preprocessor
--- config
    location = /a { add_header X-A 1; return 200 "a\n"; }
--- response_headers
X-A: 1
!X-B
--- response_headers_like
X-A: \d
--- response_body
a
--- response_body_like: a
--- error_log eval
[qr/GET \/a/, "http request line"]
--- no_error_log
[error]
[alert]
[crit]
--- grep_error_log eval: qr/http request line: "[^"]+"/
--- grep_error_log_out
http request line: "GET /a HTTP/1.1"



=== TEST 2: must_die
--- config
    bad_bad;
--- must_die
--- error_log
bad_bad
--- no_error_log
[alert]
_EOT_
    my ($count) = $r->{out} =~ /# COUNT (\d+)/;
    is($r->{plan}, $count, "block_test_count matches the emitted number ($count)")
        or diag($r->{out});
    is(scalar @{ $r->{not_ok} }, 0, 'all pass') or diag($r->{out});
    is($count, 3 * ((1 + 2 + 1 + 1 + 1 + 2 + 3 + 1) + (1 + 1 + 1)), 'count per the README rules');
}

# --- master_on + workers, ONLY, load_module line -------------------------------
{
    my $r = run_t(<<'_EOT_');
use Test::Nginx::Socket;
master_on();
workers(2);
log_level('info');
plan tests => 2 * blocks();
run_tests();
__DATA__

=== TEST 1: not run
--- config
    location = /a { return 200 "x\n"; }
--- request
GET /a
--- response_body
never



=== TEST 2: only this one
--- config
    location = /a { return 200 "$pid\n"; }
--- request
GET /a
--- response_body_like: ^\d+$
--- ONLY
_EOT_
    is($r->{plan}, 2, 'ONLY: blocks() is 1');
    is(scalar @{ $r->{ok} }, 2, 'ONLY block passes') or diag($r->{out});
    like($r->{out}, qr/I found ONLY/, 'ONLY diagnostic');
    my $conf = do { local (@ARGV, $/) = "$tmp/servroot$n/conf/nginx.conf"; <> };
    like($conf, qr/^master_process on;$/m, 'master_process on');
    like($conf, qr/^worker_processes 2;$/m, 'worker_processes 2');
    like($conf, qr/^error_log \S+ info;$/m, 'log_level');

    $r = run_t(<<'_EOT_', TEST_NGINX_LOAD_MODULES => '/nonexistent/ngx_x_module.so');
use Test::Nginx::Socket;
plan tests => 2 * blocks();
run_tests();
__DATA__

=== TEST 1: load_module line from TEST_NGINX_LOAD_MODULES
--- config
--- must_die
--- error_log
/nonexistent/ngx_x_module.so
_EOT_
    is(scalar @{ $r->{ok} }, 2, 'load_module line generated') or diag($r->{out});

    $r = run_t(<<'_EOT_');
use Test::Nginx::Socket;
plan tests => 1 * blocks();
run_tests();
__DATA__

=== TEST 1: undefined $TEST_NGINX_ variable
--- config
    location = /a { return 200 "$TEST_NGINX_NOT_SET_ANYWHERE"; }
--- request
GET /a
_EOT_
    is(scalar @{ $r->{not_ok} }, 1, 'undefined TEST_NGINX variable is a failure');
    like($r->{out}, qr/No environment TEST_NGINX_NOT_SET_ANYWHERE defined/, 'and says why');
}

# --- read until nginx closes, as the real runner: keep-alive is a timeout -------
{
    my $r = run_t(<<'_EOT_');
use Test::Nginx::Socket;
plan tests => 4 + 2 + 2 + 2;
run_tests();
__DATA__

=== TEST 1: keep-alive: complete response, connection left open
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a
--- more_headers
Connection: keep-alive
--- timeout: 0.5
--- response_body
a
--- raw_response_headers_like: ^HTTP/1.1 200 OK\r\n.*Content-Length: 2\r\n.*Connection: keep-alive\r\n\z
--- raw_response_headers_unlike: \r\n\r\n



=== TEST 2: close among the Connection tokens
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a
--- more_headers
Connection: keep-alive, close
--- timeout: 0.5
--- response_body
a



=== TEST 3: keep-alive with abort: the timeout is tolerated
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a
--- more_headers
Connection: keep-alive
--- timeout: 0.3
--- abort
--- response_body
a



=== TEST 4: HTTP/1.0: nginx closes
--- config
    location = /a { return 200 "a\n"; }
--- request
GET /a HTTP/1.0
--- response_body
a
_EOT_
    is($r->{ran}, $r->{plan}, 'as many results as planned') or diag($r->{out});
    is_deeply($r->{not_ok}, ['TEST 1: keep-alive: complete response, connection left open - status code ok'],
              'only the keep-alive request fails') or diag($r->{out});
    like($r->{out}, qr/client socket timed out.*\n.*response was complete but nginx kept the connection open/,
         'the diagnostic says why');
    ok(scalar(grep { /TEST 1: .* - raw resp headers like/ } @{ $r->{ok} }),
       'raw headers: the last header line ends them');
}

done_testing();
