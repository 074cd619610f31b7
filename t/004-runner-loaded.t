# Which Test::Nginx::Socket the block files of this run load: the first one
# in @INC, as for them.  make test sets TEST_CHAT_RUNNER=clean-room (the
# subset in t/runner), make test-real the directory of the real Test::Nginx
# (or "real" for an installed one, e.g. from CPAN).  Without the variable
# there is nothing to compare with and the file only says what it found.

use strict;
use warnings;
use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use FindBin ();

my $want = $ENV{TEST_CHAT_RUNNER};
my $set = defined $want && length $want;

unless (eval { require Test::Nginx::Socket; 1 }) {
    plan skip_all => 'no Test::Nginx::Socket in @INC' unless $set;
    BAIL_OUT("TEST_CHAT_RUNNER=$want but no Test::Nginx::Socket loads: $@");
}

my $file = abs_path($INC{'Test/Nginx/Socket.pm'});
my $clean = do { no warnings 'once'; $Test::Nginx::Socket::CleanRoom };

plan skip_all => "TEST_CHAT_RUNNER not set; Test::Nginx::Socket is $file"
    unless $set;

if ($want eq 'clean-room') {
    plan tests => 2;

    ok($clean, 'the clean-room runner is loaded') or diag("loaded: $file");
    is($file, abs_path("$FindBin::Bin/runner/Test/Nginx/Socket.pm"),
       'from t/runner');

} else {
    plan tests => 4;

    ok(!$clean, 'not the clean-room runner') or diag("loaded: $file");
    ok($INC{'Test/Nginx/Util.pm'}, 'Test::Nginx::Util came with it');
    cmp_ok($Test::Nginx::Socket::VERSION, '>=', 0.30,
           "Test::Nginx::Socket $Test::Nginx::Socket::VERSION");

    if ($want eq 'real') {
        pass("an installed one: $file");

    } else {
        is(dirname(dirname(dirname($file))), abs_path($want),
           "from TEST_CHAT_RUNNER=$want");
    }
}
