# permessage-deflate with the npm "ws" client (t/e2e/deflate-ws.js): off,
# its defaults, windows 9-15 with and without no_context_takeover offered,
# a server window of 8 (declined); history, long and short messages intact
# and identical for a member without compression.  Each line of the
# script is one test here.  Skipped without node or t/e2e/node_modules/ws
# (./scripts/deps.sh --test installs it).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Spec;
use Test::Chat::Nginx;

my $dir = "$FindBin::Bin/e2e";

sub in_path {
    my ($prog) = @_;
    for my $d (File::Spec->path) {
        return 1 if -x "$d/$prog";
    }
    return 0;
}

plan skip_all => 'no node in PATH' unless in_path('node');
plan skip_all => 'no t/e2e/node_modules/ws (./scripts/deps.sh --test)'
    unless -d "$dir/node_modules/ws";

my $t = Test::Chat::Nginx->new(
    http   => 'chat_zone chat 8m;',
    server => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_deflate on;
            chat_history 200;
        }
        location = /status { chat_status chat; }
_EOS_
    workers => 2,
);

# node and its children run without a sanitizer preloaded for nginx
local $ENV{LD_PRELOAD};
delete $ENV{LD_PRELOAD};

my $port = $t->port;
open(my $fh, '-|', 'node', "$dir/deflate-ws.js", $port, '/chat')
    or die "cannot run node: $!";

my ($summary, $failed) = (undef, 0);

while (my $line = <$fh>) {
    chomp $line;
    if ($line =~ /^(not )?ok \d+ - (.*)$/) {
        $failed = defined $1;
        ok(!$failed, "ws: $2");
    } elsif ($line =~ /^\d+ passed, \d+ failed$/) {
        $summary = $line;
    } else {
        $line =~ s/^# ?//;
        $failed ? diag($line) : note($line);
    }
}

close($fh);
is($? >> 8, 0, 'deflate-ws.js exits 0' . ($summary ? " ($summary)" : ''));

my $err = $t->error_log;
unlike($err, qr/\[(alert|crit|emerg)\]|signal \d+/,
       'no alert, crit or crash in error.log');

done_testing();
