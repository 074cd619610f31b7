# The wall clock stepped back under nginx (SPEC §8), with PostgreSQL: a
# small preloaded library shifts gettimeofday() by what a file says, for
# nginx alone (the monotonic clock, nginx's timers, stay as they are).
#
#   1. 5 messages, then the clock one hour back, 5 more: ids distinct and
#      increasing, and the messages' times never go back (a message's time
#      follows its id)
#   2. nginx restarted, the clock still an hour back: a join with "since"
#      the third message, answered from storage, has the 7 messages after
#      it, in order, complete (stored rows ordered by time missed the 5
#      posted after the step)
#   3. 5 messages in this life: acked, stored as sent, ids never seen
#
# The file takes ~5 s.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp ();
use Time::HiRes ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(poll client send_json take join_room send_msg
                        ack_id);
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

my $dir = File::Temp::tempdir('chat-clock-XXXXXX', TMPDIR => 1,
                              CLEANUP => 1);
chmod 0755, $dir;

{
    open my $f, '>', "$dir/shift.c" or die "$dir/shift.c: $!";
    print $f <<'_C_';
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

/* gettimeofday() shifted by the milliseconds in $CHAT_CLOCK_SHIFT's file */

static char  *path;

__attribute__((constructor)) static void
init(void)
{
    const char  *p = getenv("CHAT_CLOCK_SHIFT");

    /* a copy: nginx writes its process titles over the environment */
    path = p ? strdup(p) : NULL;
}

static long long
shift_ms(void)
{
    int      fd;
    char     buf[32];
    ssize_t  n;

    if (path == NULL || (fd = open(path, O_RDONLY)) < 0) {
        return 0;
    }

    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);

    if (n <= 0) {
        return 0;
    }

    buf[n] = '\0';
    return atoll(buf);
}

int
gettimeofday(struct timeval *tv, void *tz)
{
    int         rc;
    long long   us;
    static int  (*real)(struct timeval *, void *);

    if (real == NULL) {
        real = (int (*)(struct timeval *, void *))
               dlsym(RTLD_NEXT, "gettimeofday");
    }

    rc = real(tv, tz);

    if (rc == 0 && tv != NULL) {
        us = (long long) tv->tv_sec * 1000000 + tv->tv_usec
             + shift_ms() * 1000;
        tv->tv_sec = us / 1000000;
        tv->tv_usec = us % 1000000;
    }

    return rc;
}
_C_
    close $f;
}

my $cc = `cc -shared -fPIC -O2 -o $dir/shift.so $dir/shift.c -ldl 2>&1`;
plan skip_all => "cannot build the clock shifter: $cc" if $? || !-e "$dir/shift.so";

plan tests => 14;

my $shift = "$dir/shift";

sub set_shift {
    open my $f, '>', "$shift.tmp" or die "$shift.tmp: $!";
    print $f $_[0];
    close $f;
    rename "$shift.tmp", $shift or die "$shift: $!";
}

set_shift(0);

my $pg = Test::Chat::Pg->start;

# nginx (and nothing else: Test::Chat::Pg drops LD_PRELOAD) gets the shift;
# under make test-asan, scripts/nginx-asan puts it after the sanitizers
$ENV{LD_PRELOAD} = join ' ', grep { defined && length } $ENV{LD_PRELOAD},
                                                        "$dir/shift.so";
$ENV{CHAT_CLOCK_SHIFT} = $shift;

my $t = Test::Chat::Nginx->new(workers => 1,
    http => "chat_zone chat 1m;\n    " . $pg->directive,
    server => <<'_EOC_');
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 5;
        }
_EOC_

sub connected {
    return $pg->wait_up($t, 2, 10);
}

sub member {
    my ($user, %join) = @_;
    my $c = client($t, $user);
    join_room($c, 'r', %join) or diag("$user: no joined") if $c->{ws}->ok;
    return $c;
}

# sends, returns [id, ts] (ts from the message frame)
sub post {
    my ($c, $content) = @_;
    my $a = send_msg($c, 'r', $content, $content);
    my $m = take($c, sub { $_[0]{type} eq 'message'
                           && $_[0]{content} eq $content }, 3);
    return [ack_id($a), $m && $m->{ts}];
}

sub num { ($_[0] // '') =~ /^(\d+)/ ? $1 : -1 }

# --- 1. the clock steps back --------------------------------------------------

ok(connected(), 'connected to PostgreSQL');

my $ann = member('ann');
my @a = map { post($ann, "a$_") } 1 .. 5;

set_shift(-3_600_000);
Time::HiRes::sleep(0.05);

my @b = map { post($ann, "b$_") } 1 .. 5;
my @all = (@a, @b);

is(scalar(grep { defined $_->[0] } @all), 10, '10 acks');
ok(!grep({ num($all[$_][0]) <= num($all[$_ - 1][0]) } 1 .. 9),
   'ids increase across the step')
    or diag(join ' ', map { $_->[0] // 'none' } @all);
ok(!grep({ ($all[$_][1] // 0) < ($all[$_ - 1][1] // 0) } 1 .. 9),
   'times never go back')
    or diag(join ' ', map { $_->[1] // 'none' } @all);
{
    my $now = Time::HiRes::time() * 1000;
    ok(abs(($b[-1][1] // 0) - $now) < 60_000,
       'the times stay at the last one before the step')
        or diag("$b[-1][1] vs $now");
}

# --- 2. restarted, a join with "since" answered from storage -----------------

$ann->{ws}->close;
$t->stop;
ok($t->start, 'restarted (the clock still an hour back)');
ok(connected(), 'connected again');

{
    my $c = client($t, 'bob');
    send_json($c, type => 'join', room => 'r', since => $a[2][0]);
    my $h = take($c, sub { $_[0]{type} eq 'history' }, 5);

    is(join(',', map { $_->{content} } @{ $h ? $h->{messages} : [] }),
       'a4,a5,b1,b2,b3,b4,b5', 'since the third: the 7 after it, in order');
    ok($h && $h->{complete}, 'complete');
    is(join(',', map { $_->{id} } @{ $h ? $h->{messages} : [] }),
       join(',', map { $_->[0] // 'none' } @all[3 .. 9]), 'their ids');
    $c->{ws}->close;
}

# --- 3. this life's messages ------------------------------------------------

{
    my $cat = member('cat');
    my @c = map { post($cat, "c$_") } 1 .. 5;
    my %seen = map { ($_->[0] // '') => 1 } @all;

    is(scalar(grep { defined $_->[0] } @c), 5, 'this life: 5 acks');
    ok(!grep({ $seen{ $_->[0] // '' } } @c), 'this life: ids never seen');

    my %rows = map { my ($id, $u, $x) = split /\|/; ($id => "$u|$x") }
        $pg->psql(q{SELECT id, user_id, content FROM messages});
    is(join(',', map { $rows{ $_->[0] // '' } // 'none' } @c),
       'cat|c1,cat|c2,cat|c3,cat|c4,cat|c5', 'this life: stored as sent');
    is(scalar keys %rows, 15, '15 rows');
}

set_shift(0);
