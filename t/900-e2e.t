# The browser client (conf-examples/www/) end to end: t/e2e/run.sh drives
# headless Chromium against nginx with the module; each of its checks is
# one test here, plus one for its exit status.
#
# Skipped unless /usr/bin/chromium (or $E2E_CHROMIUM) and node exist.
# Uses TEST_NGINX_BINARY and TEST_NGINX_LOAD_MODULES like the rest of t/
# (defaults: /usr/sbin/nginx and build/ngx_chat_module.so of this
# repository); E2E_PORT (default 18089) is the port on 127.0.0.1.

use strict;
use warnings;

use Test::More;
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;

my $root = abs_path(File::Spec->catdir(dirname(abs_path(__FILE__)), '..'));
my $run = "$root/t/e2e/run.sh";

sub in_path {
    my ($prog) = @_;

    for my $dir (File::Spec->path) {
        my $f = File::Spec->catfile($dir, $prog);
        return $f if -f $f && -x _;
    }

    return undef;
}

my $chromium = $ENV{E2E_CHROMIUM} || '/usr/bin/chromium';

plan skip_all => "no $chromium (apt-get install chromium)" unless -x $chromium;
plan skip_all => 'no node in PATH' unless in_path('node');
plan skip_all => 'no t/e2e/node_modules and no npm to install it'
    unless -d "$root/t/e2e/node_modules/playwright-core" || in_path('npm');

$ENV{TEST_NGINX_BINARY} ||= '/usr/sbin/nginx';
$ENV{TEST_NGINX_LOAD_MODULES} ||= "$root/build/ngx_chat_module.so";

open(my $fh, '-|', $run) or die "cannot run $run: $!";

my ($summary, $last_failed) = (undef, 0);

while (my $line = <$fh>) {
    chomp $line;

    if ($line =~ /^(not )?ok \d+ - (.*)$/) {
        $last_failed = defined $1;
        ok(!$last_failed, "e2e: $2");

    } elsif ($line =~ /^(\d+) passed, (\d+) failed$/) {
        $summary = $line;

    } else {
        $line =~ s/^# ?//;

        if ($last_failed) {
            diag($line);

        } else {
            note($line);
        }
    }
}

close($fh);
my $status = $? >> 8;

ok($status == 0, "t/e2e/run.sh exits 0"
                 . (defined $summary ? " ($summary)" : ' (no summary line)'))
    or diag("t/e2e/run.sh exit status $status");

done_testing();
