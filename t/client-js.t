# The JavaScript client library (clients/js/) against a real nginx with
# the module: its `node --test` suite (clients/js/test/*.test.js) runs
# with the port and the master pid of the nginx started here, and each
# of its tests is one test here.  The suite kills workers (SIGKILL) and
# reloads nginx (SIGHUP, worker_shutdown_timeout 1s: old workers close
# with 1001) while clients chat.
#
# Skipped only when node is not installed; `ws` and typescript (which
# checks index.d.ts) come from clients/js/package-lock.json (npm ci, done
# by scripts/deps.sh --test or here when npm is there).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use File::Spec;
use File::Temp ();
use JSON::PP ();
use Test::Chat::Nginx;

my $root = abs_path("$FindBin::Bin/..");
my $dir = "$root/clients/js";

sub in_path {
    my ($prog) = @_;
    for my $d (File::Spec->path) {
        my $f = File::Spec->catfile($d, $prog);
        return $f if -f $f && -x _;
    }
    return undef;
}

plan skip_all => 'no node in PATH (scripts/deps.sh --test installs it)'
    unless in_path('node');

unless (-d "$dir/node_modules/ws" && -d "$dir/node_modules/typescript") {
    if (in_path('npm')) {
        # a sanitizer runtime preloaded for nginx is not for npm
        local $ENV{LD_PRELOAD};
        delete $ENV{LD_PRELOAD};
        system("cd '$dir' && npm ci --no-audit --no-fund --loglevel=error >&2");
    }
}

BAIL_OUT("clients/js/node_modules/ws missing: run scripts/deps.sh --test")
    unless -d "$dir/node_modules/ws";

# the HS256 secret of /chat-jwt (SPEC section 10), for the tests to sign
# their tokens with
my $keydir = File::Temp::tempdir('client-js-XXXXXX', TMPDIR => 1, CLEANUP => 1);
my $key = "$keydir/hs256.key";
open(my $kf, '>', $key) or die "$key: $!";
print $kf join('', map { chr(97 + int(rand(26))) } 1 .. 40), "\n";
close($kf);

my $t = Test::Chat::Nginx->new(workers => 2, conf => <<"_EOC_");
worker_shutdown_timeout 1s;
events { worker_connections 1024; }
http {
    chat_zone chat 64m;
    server {
        listen 127.0.0.1:%%PORT%% reuseport;
        server_name localhost;
        location = /chat {
            chat chat;
            chat_user \$arg_user;
            chat_history 5000;
            chat_request_rate off;
        }
        location = /chat-slow {
            chat chat;
            chat_user \$arg_user;
            chat_rate 2r/s burst=2;
        }
        location = /chat-jwt {
            chat chat;
            chat_jwt \$arg_token;
            chat_jwt_key $key HS256;
            chat_history 1000;
        }
        location = /chat/status { chat_status chat; }
        location = /chat/api { chat_api chat; }
    }
}
_EOC_

$ENV{CHAT_TEST_PORT} = $t->port;
$ENV{CHAT_TEST_MASTER_PID} = $t->master_pid;
$ENV{CHAT_TEST_JWT_KEY} = $key;

my @cmd = ('node', '--test', '--test-concurrency=1', '--test-reporter=tap');

# Node 20's own WebSocket is behind a flag (22 has it): test/global.test.js
# runs without the ws package when it is there
if (system('node --experimental-websocket -e '
           . '"process.exit(typeof WebSocket === \'function\' ? 0 : 1)"'
           . ' >/dev/null 2>&1') == 0
    && system('node -e "process.exit(typeof WebSocket === \'function\' ? 0 : 1)"'
              . ' >/dev/null 2>&1') != 0)
{
    splice(@cmd, 1, 0, '--experimental-websocket');
}
my @files = sort glob("$dir/test/*.test.js");

BAIL_OUT("no clients/js/test/*.test.js") unless @files;

my $pid = open(my $fh, '-|');
die "fork: $!" unless defined $pid;

if ($pid == 0) {
    # node runs without a sanitizer runtime meant for nginx
    delete $ENV{LD_PRELOAD};
    chdir $dir or die "chdir $dir: $!";
    open(STDERR, '>&', \*STDOUT);
    exec(@cmd, @files) or die "exec node: $!";
}

my ($pass, $fail, $last_failed) = (0, 0, 0);

while (my $line = <$fh>) {
    chomp $line;

    # the top-level tests of each file (subtests are indented)
    if ($line =~ /^    (not )?ok \d+ - (.*?)(?: # (.*))?$/
        || $line =~ /^(not )?ok \d+ - (.*?)(?: # (.*))?$/)
    {
        next if $line =~ /^ok \d+ - \S+\.test\.js$/;

        if (!defined $1 && defined $3 && $3 =~ /^SKIP\b\s*(.*)/) {
            my $why = $1;
            SKIP: { skip("client-js: $2: $why", 1) }
            $last_failed = 0;
            next;
        }

        $last_failed = defined $1;
        ok(!$last_failed, "client-js: $2");
        $last_failed ? $fail++ : $pass++;

    } elsif ($last_failed || $line =~ /^# (?:tests|pass|fail|skipped) /) {
        diag($line);

    } else {
        note($line);
    }
}

close($fh);
my $status = $? >> 8;

ok($status == 0 && $pass > 0 && $fail == 0,
   "node --test exits 0 ($pass passed, $fail failed)")
    or diag("node --test exit status $status; error.log tail:\n"
            . `tail -n 30 ${\ $t->error_log_path}`);

$t->stop;

# the package: npm pack (offline) gives the module, its types and README
SKIP: {
    skip('no npm', 1) unless in_path('npm');

    local $ENV{LD_PRELOAD};
    delete $ENV{LD_PRELOAD};
    my $json = `cd '$dir' && npm pack --dry-run --json --offline 2>/dev/null`;
    my $files = eval { JSON::PP::decode_json($json)->[0]{files} } || [];
    my @names = sort map { $_->{path} } @$files;

    is_deeply(\@names, [qw(README.md index.d.ts index.js package.json)],
              'npm pack: index.js, index.d.ts, README.md, package.json')
        or diag($json);
}

done_testing();
