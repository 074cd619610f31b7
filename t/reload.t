# nginx -s reload keeps the zone and loses no message (SPEC §5): a client
# on an old worker (A) and one on a new worker (B) chat both ways after the
# reload; B sees the room (members, history) as it was before the reload;
# when worker_shutdown_timeout expires A is closed with 1001, reconnects
# with "since" and gets exactly what it missed.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;
use Test::Chat::Util qw(status conn worker_of take reply send_msg ack_id);
use Time::HiRes ();

plan tests => 46;

my $t0 = Time::HiRes::time();

my %conf = (
    main => 'worker_shutdown_timeout 3s;',
    http => 'chat_zone chat 1m;',
    server => <<'_EOC_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_history 100;
        }
        location = /chat/status { chat_status chat; }
_EOC_
);
my $t = Test::Chat::Nginx->new(%conf, workers => 2);

# the next N message frames (acks/presence skipped)
sub messages {
    my ($ws, $n, $timeout) = @_;
    my @m;
    my $end = Time::HiRes::time() + ($timeout || 3);
    while (@m < $n) {
        my $left = $end - Time::HiRes::time();
        last if $left <= 0;
        my $m = take($ws, sub { $_[0]{type} eq 'message' }, $left) or last;
        push @m, $m;
    }
    return @m;
}

# --- before the reload ---------------------------------------------------------------

my $A = eval { conn($t, 'ann') };
ok($A, 'A (ann) connected before the reload') or diag($@);
$A->send_json({ type => 'join', room => 'r' });
my $j = reply($A, 'joined');
is($j && $j->{members}, 1, 'A joined r');

my @before;
push @before, ack_id(send_msg($A, 'r', "before $_", "b$_")) for 1 .. 3;
is(scalar(grep { defined } @before), 3, 'A sent 3 messages before the reload');
my @m = messages($A, 3);
is(join(',', map { $_->{id} } @m), join(',', map { $_ // '?' } @before),
   'A got its 3 messages');

my @old = $t->worker_pids;
my $mark = $t->log_mark;

# --- reload --------------------------------------------------------------------------

my $reload_at = Time::HiRes::time();
ok($t->reload, 'reload') or diag($t->reload_error);
my @new = $t->worker_pids;
my %old = map { $_ => 1 } @old;
is(scalar(grep { $old{$_} } @new), 0, 'all current workers are new');
my %cur = map { $_ => 1 } @new;
my @shutting = grep { !$cur{$_} } $t->worker_pids(all => 1);
cmp_ok(scalar @shutting, '>=', 1, 'an old worker is still shutting down (it holds A)');

my $B = eval { conn($t, 'bob') };
ok($B, 'B (bob) connected after the reload') or diag($@);
my $a_on = $A && worker_of($t, $A, @old);
my $b_on = $B && worker_of($t, $B, @new);
ok($a_on, "A is served by an old worker (" . ($a_on // 'none') . ')');
ok($b_on, "B is served by a new worker (" . ($b_on // 'none') . ')');
$B->send_json({ type => 'join', room => 'r', history => 10 });
$j = reply($B, 'joined');
is($j && $j->{members}, 2, 'joined: members counts A (the zone kept the room)');
my $h = reply($B, 'history');
is($h && $h->{type}, 'history', 'B got the history reply');
is(join(',', map { $_->{id} } @{ ($h && $h->{messages}) || [] }), join(',', map { $_ // '?' } @before),
   'history: the 3 messages sent before the reload, oldest first');
is(join('|', map { $_->{content} } @{ ($h && $h->{messages}) || [] }), 'before 1|before 2|before 3',
   'history contents');
ok($h && $h->{complete}, 'history complete');

my $p = reply($A, 'presence');
is($p && "$p->{event} $p->{user}", 'join bob', 'A (old worker) got presence join for B');

# --- both ways after the reload ---------------------------------------------------------

my $ida = ack_id(send_msg($A, 'r', 'from A after reload', 'a1'));
ok(defined $ida, 'A (old worker) can send after the reload');
my $idb = ack_id(send_msg($B, 'r', 'from B after reload', 'b1'));
ok(defined $idb, 'B (new worker) can send');

my @ma = messages($A, 2);
my @mb = messages($B, 2);
is(join('|', map { $_->{content} } @mb), 'from A after reload|from B after reload',
   'B got A\'s and its own message');
is(join('|', map { $_->{content} } @ma), 'from A after reload|from B after reload',
   'A got its own and B\'s message');
is(join(',', map { $_->{id} } @ma), join(',', map { $_->{id} } @mb), 'same ids, same order');
my $last_seen = @ma ? $ma[-1]{id} : undef;

my $st = status($t);
is("$st->{connections}/$st->{users}/$st->{rooms}", '2/2/1',
   'status after the reload: A and B counted');

# --- worker_shutdown_timeout -------------------------------------------------------------

my ($code, $eof) = $A->expect_close(timeout => 8);
my $closed_after = Time::HiRes::time() - $reload_at;
is($code, 1001, 'A closed with 1001 (going away) when the old worker must finish');
ok($eof, 'TCP closed');
cmp_ok($closed_after, '>=', 2.5, sprintf('not before worker_shutdown_timeout (%.1f s)', $closed_after));
my @a_extra = grep { $_->{opcode} == 1 } @{ $A->skipped_frames };
is(scalar @a_extra, 0, 'A got no other frame before the close') or diag(explain \@a_extra);

$p = reply($B, 'presence');
is($p && "$p->{event} $p->{user}", 'leave ann', 'B got presence leave for A');

my $end = Time::HiRes::time() + 5;
my @left;
do { @left = grep { Test::Chat::Nginx->pid_alive($_) } @old; Time::HiRes::sleep(0.05) }
    while @left && Time::HiRes::time() < $end;
is(scalar @left, 0, 'old workers exited');

# --- B sends while A is away; A resumes with since -------------------------------------------

my @missed;
push @missed, ack_id(send_msg($B, 'r', "missed $_", "m$_")) for 1 .. 5;
is(scalar(grep { defined } @missed), 5, 'B sent 5 messages while A was away');
messages($B, 5);

my $A2 = eval { conn($t, 'ann') };
ok($A2, 'A reconnected') or diag($@);
$A2->send_json({ type => 'join', room => 'r', since => $last_seen });
$j = reply($A2, 'joined');
is($j && $j->{members}, 2, 'A joined again: 2 members');
$h = reply($A2, 'history');
is(join(',', map { $_->{id} } @{ ($h && $h->{messages}) || [] }), join(',', map { $_ // '?' } @missed),
   'since: exactly the 5 missed messages, in order');
is(join('|', map { $_->{content} } @{ ($h && $h->{messages}) || [] }),
   join('|', map { "missed $_" } 1 .. 5), 'missed contents');
is($h && ($h->{complete} ? 'true' : 'false'), 'true', 'complete: true');
ok(!grep({ $_->{type} eq 'message' } @{ $A2->skipped }), 'no live message before the history');

my $idl = ack_id(send_msg($B, 'r', 'live again', 'l1'));
@ma = messages($A2, 1);
is($ma[0] && $ma[0]{id}, $idl, 'A gets live messages after the history, no duplicates');
my @rest = grep { $_->{type} eq 'message' } $A2->drain_json(0.3);
is(scalar @rest, 0, 'nothing else');

# --- counters after everything closed ---------------------------------------------------------

($code) = $A2->close(code => 1000);
is($code, 1000, 'A closed');
($code) = $B->close(code => 1000);
is($code, 1000, 'B closed');

$end = Time::HiRes::time() + 3;
do { $st = status($t); Time::HiRes::sleep(0.05) }
    until ($st->{connections} == 0 && $st->{users} == 0 && $st->{rooms} == 0
                   && $st->{workers} == 2)
        || Time::HiRes::time() > $end;
is("$st->{connections}/$st->{users}/$st->{rooms}/$st->{workers}", '0/0/0/2',
   'status: no connections, users, rooms; 2 workers attached');
is($st->{messages_in}, 3 + 2 + 5 + 1, 'messages_in kept across the reload');
my $out = $st->{messages_out} // -1;
ok($out >= 3 + 4 + 5 + 2 && $out <= 3 + 4 + 5 + 2 + 3 + 5,
   "messages_out sane ($out: 14 live frames, at most 8 more in history replies)");

my @bad = $t->grep_error_log(qr/\[(?:error|crit|alert|emerg)\]|exited on signal/);
# (both were seen with the build of 712a8f5: a SIGSEGV in
# ngx_chat_shm_disconnect after another worker's graceful exit had
# written sh->workers[-1], and the notification socket left open)
is(join("\n", grep { /exited on signal|was locked by/ } @bad), '',
   'no worker crashed (no "exited on signal", no "zone was locked by")');
is(join("\n", grep { /open socket #\d+ left in connection|\] \d+#\d+: aborting$/ } @bad), '',
   'no [alert] open socket left at a graceful worker exit');
is(join("\n", grep { !/exited on signal|was locked by|open socket #\d+ left in connection|\] \d+#\d+: aborting$/ } @bad),
   '', 'no other [error], [crit], [alert] in error.log');

my $elapsed = Time::HiRes::time() - $t0;
cmp_ok($elapsed, '<', 40, sprintf('finished in %.1f s', $elapsed));
