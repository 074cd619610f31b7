# Message storage in PostgreSQL (chat_postgres) against a private
# PostgreSQL server (Test::Chat::Pg); SPEC §4-§7.
#
#   0. schema created by the workers (messages, primary key on id, an
#      index on room_id), status "postgres":"up"
#   1. every acked message is a row (room_id, user_id, content verbatim:
#      quotes, backslashes, SQL text, array-literal syntax, newlines,
#      non-ASCII, emoji); ack id = row id; count(*) = acks
#   6. room names and user ids with quotes and SQL text stored verbatim
#   2. ack after COMMIT: PostgreSQL stopped -> live delivery at once, no
#      ack, status "down"; back -> late acks, each message stored once, in
#      acceptance order; a burst with PostgreSQL stopped under it
#   4. nginx restarted (empty zone): join with history / since and history
#      with before are answered from PostgreSQL, history before live
#  4b. PostgreSQL reached through a relay that holds new connections for
#      1.5 s: status and a join with history while the worker connects
#   3. chat_postgres_queue full -> "unavailable", delivered to no one
#   5. bad conninfo -> nginx -t error with file:line; wrong password ->
#      [error] with libpq's message, status "down", live chat goes on;
#      a URI conninfo works
#
# Everything waits by polling with deadlines; the whole file takes ~16 s.

use strict;
use warnings;
use utf8;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Encode ();
use JSON::PP ();
use Time::HiRes ();
use IO::Select ();
use IO::Socket::INET ();
use POSIX ();

use Test::Chat::Nginx;
use Test::Chat::Util qw(now poll status client send_json take join_room
                        pump settle extract collect);
use Test::Chat::WS;
use Test::Chat::Pg;

plan skip_all => 'no PostgreSQL server binaries (Test::Chat::Pg->available)'
    unless Test::Chat::Pg->available;

plan tests => 104;

for my $h (qw(output failure_output todo_output)) {
    binmode(Test::More->builder->$h, ':encoding(UTF-8)');
}

my $T0 = Time::HiRes::time();
my $JSON = JSON::PP->new->utf8->canonical;
my $ZONE = 'chat';

# --- helpers ------------------------------------------------------------------

sub nginx_conf {
    my ($conninfo, %o) = @_;
    my $queue = defined $o{queue} ? "\n    chat_postgres_queue $o{queue};" : '';
    (my $q = $conninfo) =~ s/(["\\])/\\$1/g;
    return (
        http => "chat_zone $ZONE 4m;\n    chat_postgres \"$q\";$queue",
        server => <<"_EOC_",
        location = /chat {
            chat $ZONE;
            chat_user \$arg_user;
            chat_history 200;
            chat_max_message_size 16k;
        }
        location = /chat/status {
            chat_status $ZONE;
        }
_EOC_
        workers => defined $o{workers} ? $o{workers} : 2,
    );
}

sub wait_pg_status {
    my ($t, $want, $timeout) = @_;
    my $got;
    poll($timeout, sub { $got = status($t)->{postgres}; defined $got && $got eq $want }, 0.05);
    return defined $got ? $got : '(no status)';
}

# the workers' connections are established ("is up" once per connection,
# two per worker: stores and reads): status "up" is not proof of that (see
# part 4b)
sub wait_connected {
    my ($t, $n, $timeout) = @_;
    my $re = qr/chat postgres: .* is up/;
    return poll($timeout, sub { scalar(my @l = $t->grep_error_log($re)) >= $n }, 0.05);
}

sub is_msg { my ($room) = @_; sub { $_[0]{type} eq 'message' && $_[0]{room} eq $room } }
sub is_ack { my ($ref) = @_; sub { $_[0]{type} eq 'ack' && defined $_[0]{ref} && $_[0]{ref} eq $ref } }

sub first_lines {
    my @l = @_;
    return @l[0 .. ($#l < 9 ? $#l : 9)];
}

# a TCP relay to 127.0.0.1:$to_port that holds each new connection for
# $delay seconds before relaying; a process group of our own, killed by us
sub delay_proxy {
    my ($to_port, $delay) = @_;
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp',
                                  Listen => 16, ReuseAddr => 1) or die "listen: $!";
    my $port = $l->sockport;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        # nothing of the parent's (END blocks, signal handlers) runs here
        $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP PIPE);
        $SIG{CHLD} = 'IGNORE';
        POSIX::setpgid(0, 0);
        while (1) {
            my $c = $l->accept or next;
            my $k = fork;
            if (defined $k && $k == 0) {
                close $l;
                Time::HiRes::sleep($delay);
                my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $to_port, Proto => 'tcp')
                    or POSIX::_exit(0);
                my $sel = IO::Select->new($c, $s);
                RELAY: while (1) {
                    for my $fh ($sel->can_read) {
                        my $n = sysread($fh, my $buf, 65536);
                        last RELAY unless $n;
                        my $to = $fh == $c ? $s : $c;
                        my $off = 0;
                        while ($off < $n) {
                            my $w = syswrite($to, $buf, $n - $off, $off);
                            last RELAY unless $w;
                            $off += $w;
                        }
                    }
                }
                POSIX::_exit(0);
            }
            close $c;
        }
    }
    POSIX::setpgid($pid, $pid);    # either side may run first
    close $l;
    return ($pid, $port);
}

# --- PostgreSQL helpers ---------------------------------------------------------

my $pg = Test::Chat::Pg->start(password => 'chat-pw-' . int(rand(1e9)));

# lax decoding: PostgreSQL checked the UTF-8; strict Encode would turn
# noncharacters such as U+10FFFF into U+FFFD
sub unhex { Encode::decode('utf8', pack('H*', $_[0])) }

# all rows, every text column hex-encoded (content may hold newlines and |)
sub db_rows {
    my @rows;
    for my $l ($pg->psql(q{SELECT encode(convert_to(id, 'UTF8'), 'hex'),
                                  encode(convert_to(room_id, 'UTF8'), 'hex'),
                                  encode(convert_to(user_id, 'UTF8'), 'hex'),
                                  encode(convert_to(content, 'UTF8'), 'hex'),
                                  round(extract(epoch FROM created_at) * 1000)::bigint
                           FROM messages ORDER BY created_at, id}))
    {
        my @f = split /\|/, $l, -1;
        push @rows, { id => unhex($f[0]), room => unhex($f[1]), user => unhex($f[2]),
                      content => unhex($f[3]), ms => $f[4] };
    }
    return @rows;
}

sub db_by_id {
    my %by;
    push @{ $by{ $_->{id} } }, $_ for db_rows();
    return \%by;
}

sub db_count { scalar $pg->psql('SELECT count(*) FROM messages') }

# --- 0. schema and status -------------------------------------------------------

my $A = Test::Chat::Nginx->new(nginx_conf($pg->conninfo));

ok(wait_connected($A, 4, 10), 'both workers connected to PostgreSQL');
is(status($A)->{postgres}, 'up', 'status: postgres "up"');
ok(poll(10, sub { $pg->psql(q{SELECT to_regclass('public.messages') IS NOT NULL}) eq 't' }),
   'the workers created table messages');
{
    my %col = map { my @f = split /\|/; ($f[0] => "$f[1] $f[2]") }
        $pg->psql(q{SELECT column_name, data_type, is_nullable FROM information_schema.columns
                    WHERE table_name = 'messages'});
    my @bad = grep { !defined $col{$_} || $col{$_} !~ / NO$/ } qw(id room_id user_id content created_at);
    push @bad, 'created_at type ' . ($col{created_at} // '') unless ($col{created_at} // '') =~ /^timestamp with time zone/;
    ok(!@bad, 'columns id, room_id, user_id, content, created_at timestamptz, all not null')
        or diag(explain \%col);

    my @idx = $pg->psql(q{SELECT indexdef FROM pg_indexes WHERE tablename = 'messages'});
    ok((grep { /UNIQUE INDEX .*\(id\)/ } @idx) && (grep { /\(room_id, (created_at|id)\)/ } @idx),
       'unique index on id and an index on (room_id, created_at|id)')
        or diag(join "\n", @idx);
}

# --- 1. acked messages are rows, verbatim ----------------------------------------

my $ann = client($A, 'ann');
my $bob = client($A, 'bob');
ok($ann->{ws}->ok && $bob->{ws}->ok, 'ann and bob connected');
ok(join_room($ann, 'r1') && join_room($bob, 'r1'), 'ann and bob joined r1');

my @contents = (
    [ 'plain'          => 'hello' ],
    [ 'quotes'         => q{it's "quoted" and 'single' ''doubled''} ],
    [ 'backslashes'    => q{back\slash \\\\ \n \t \x00 \u0041 ends with \\} ],
    [ 'sql injection'  => q{'); DROP TABLE messages; --} ],
    [ 'sql injection 2' => q{x' OR '1'='1'; DELETE FROM messages WHERE 't'='t} ],
    [ 'placeholders'   => q{$1 $2::text %s %n ? :name $$dollar$$} ],
    [ 'array literal'  => q({"a","b"},{NULL}) ],
    [ 'NULL word'      => 'NULL' ],
    [ 'empty'          => '' ],
    [ 'blanks kept'    => "  \t spaced out \t  " ],
    [ 'newlines'       => "line 1\nline 2\r\nline 3\n\n" ],
    [ 'non-ASCII'      => 'Grüße, ça va? Ελληνικά, русский, 日本語, עברית' ],
    [ 'emoji'          => "😀👍🏽 🇫🇷 👨‍👩‍👧 \x{10FFFF}" ],
    [ 'control chars'  => "bell \x07 esc \x1b del \x7f" ],
    [ 'long'           => join('', map { chr(0x20 + $_ % 95) } 0 .. 5999) ],
);
my @sends;    # { label, ref, content, user, room, sender }
for my $i (0 .. $#contents) {
    my ($label, $content) = @{ $contents[$i] };
    push @sends, { label => $label, ref => "c$i", content => $content, user => 'ann', room => 'r1', sender => $ann };
    send_json($ann, type => 'send', room => 'r1', content => $content, ref => "c$i");
}
# the same emoji sent as JSON surrogate-pair escapes
push @sends, { label => 'escaped emoji', ref => 'esc', content => "\x{1F600} \"esc\" \x{e9}", user => 'ann', room => 'r1', sender => $ann };
$ann->{ws}->send_text('{"type":"send","room":"r1","content":"\ud83d\ude00 \"esc\" \u00e9","ref":"esc"}');
for my $i (0 .. 2) {
    push @sends, { label => "bob $i", ref => "b$i", content => "from bob $i", user => 'bob', room => 'r1', sender => $bob };
    send_json($bob, type => 'send', room => 'r1', content => "from bob $i", ref => "b$i");
}

# a room for part 4: twelve messages, all acked before nginx restarts
my $carol = client($A, 'carol');
ok(join_room($carol, 'hist'), 'carol joined hist');
for my $i (0 .. 11) {
    my $content = sprintf('h%02d', $i);
    push @sends, { label => $content, ref => "h$i", content => $content, user => 'carol', room => 'hist', sender => $carol };
    send_json($carol, type => 'send', room => 'hist', content => $content, ref => "h$i");
    Time::HiRes::sleep(0.005);
}

my %live;    # content => message as delivered (one member's copy)
{
    my @r1 = collect($bob, is_msg('r1'), 19, 5);
    my @hist = collect($carol, is_msg('hist'), 12, 5);
    $live{ $_->{content} } //= $_ for @r1, @hist;
    is(scalar(@r1) . '/' . scalar(@hist), '19/12', 'all messages delivered live (bob: r1, carol: hist)');
}

my %ack;    # ref => ack
{
    my $deadline = now() + 10;
    for my $s (@sends) {
        my $a = take($s->{sender}, is_ack($s->{ref}), $deadline - now());
        $ack{ $s->{ref} } = $a if $a;
    }
    my @missing = map { $_->{ref} } grep { !$ack{ $_->{ref} } } @sends;
    ok(!@missing, 'an ack for every send (' . scalar(@sends) . ')') or diag("no ack for: @missing");

    my @bad = map { "$_->{ref}: ack $ack{ $_->{ref} }{id}, delivered " . ($live{ $_->{content} } ? $live{ $_->{content} }{id} : 'none') }
        grep { $ack{ $_->{ref} } && !($live{ $_->{content} } && $live{ $_->{content} }{id} eq $ack{ $_->{ref} }{id}) } @sends;
    ok(!@bad, 'each ack id is the id of the delivered message') or diag(join "\n", first_lines(@bad));
    my %n; $n{ $_->{id} }++ for values %ack;
    is(scalar(grep { $n{$_} > 1 } keys %n), 0, 'ack ids are unique');
}

my $acked = keys %ack;
is(db_count(), $acked, "after the acks: count(*) = $acked, the number of acks");
{
    my $db = db_by_id();
    my @missing = grep { !$db->{ $ack{ $_->{ref} }{id} } } grep { $ack{ $_->{ref} } } @sends;
    ok(!@missing, 'every ack id is a row id') or diag('no row for: ' . join ' ', map { $_->{ref} } @missing);

    my @bad;
    for my $s (grep { $ack{ $_->{ref} } } @sends) {
        my $row = ($db->{ $ack{ $s->{ref} }{id} } || [])->[0] or next;
        push @bad, "$s->{ref}: room [$row->{room}] user [$row->{user}]"
            unless $row->{room} eq $s->{room} && $row->{user} eq $s->{user};
    }
    ok(!@bad, 'room_id and user_id of every row') or diag(join "\n", first_lines(@bad));

    for my $s (grep { $_->{ref} =~ /^(c\d+|esc)$/ } @sends) {
        my $row = $ack{ $s->{ref} } && ($db->{ $ack{ $s->{ref} }{id} } || [])->[0];
        is($row ? $row->{content} : '(no row)', $s->{content}, "content stored verbatim: $s->{label}");
    }

    @bad = ();
    for my $s (grep { $ack{ $_->{ref} } && $live{ $_->{content} } } @sends) {
        my $row = ($db->{ $ack{ $s->{ref} }{id} } || [])->[0] or next;
        my $d = $row->{ms} - $live{ $s->{content} }{ts};
        push @bad, "$s->{ref}: created_at $row->{ms} ms, ts $live{ $s->{content} }{ts}" if abs($d) > 2000;
    }
    ok(!@bad, 'created_at is the time the message was accepted (within 2 s of ts)')
        or diag(join "\n", first_lines(@bad));
}

# --- 6. room names and user ids with quotes and SQL text ---------------------------

{
    my $user = q{o'brien";DROP/**/TABLE/**/messages;--{a,"b"}\NULL};
    my $room = q{r'); DROP TABLE messages; -- {"a",NULL} \ $1 %s "q"};
    my $eve = client($A, $user);
    is($eve->{welcome} && $eve->{welcome}{user}, $user, 'user id with quotes and SQL text: welcome');
    ok(join_room($eve, $room), 'joined a room whose name has quotes and SQL text');
    send_json($eve, type => 'send', room => $room, content => 'bobby tables', ref => 'x1');
    my $a = take($eve, is_ack('x1'), 5);
    ok($a, 'acked');
    my $row = $a && (db_by_id()->{ $a->{id} } || [])->[0];
    is($row ? $row->{user} : '(no row)', $user, 'user_id stored verbatim');
    is($row ? $row->{room} : '(no row)', $room, 'room_id stored verbatim');
    is(db_count(), $acked + 1, 'table intact: count(*) = acks');
    $acked++;
    $eve->{ws}->close(code => 1000);
}

# --- 2. ack after COMMIT: PostgreSQL down for a while ------------------------------

{
    settle(0.2, $ann, $bob);
    extract($_, sub { 1 }) for $ann, $bob;    # part 1 leftovers
    $pg->stop;
    my @d = map { "down-$_" } 1 .. 5;
    my $t_sent;
    for my $i (0 .. $#d) {
        send_json($ann, type => 'send', room => 'r1', content => $d[$i], ref => "d$i");
        Time::HiRes::sleep(0.02);   # distinct created_at milliseconds
    }
    $t_sent = now();
    my @got = collect($bob, is_msg('r1'), 5, 3);
    my $took = now() - $t_sent;
    is(join(' ', map { $_->{content} } @got), "@d", 'PostgreSQL down: bob got the 5 messages live, in order');
    ok($took < 1, sprintf('... at once (%.2f s after the last send)', $took));
    my @own = collect($ann, is_msg('r1'), 5, 3);
    is(scalar(@own), 5, 'ann got her own 5 messages live');

    settle(1.5, $ann);
    my @early = extract($ann, sub { $_[0]{type} eq 'ack' });
    is(scalar(@early), 0, 'no ack while PostgreSQL is down (1.5 s)')
        or diag($JSON->encode(\@early));
    is(wait_pg_status($A, 'down', 3), 'down', 'status: postgres "down"');

    $pg->start_again;
    my %a;
    my $deadline = now() + 15;
    for my $i (0 .. $#d) {
        my $x = take($ann, is_ack("d$i"), $deadline - now());
        $a{"d$i"} = $x if $x;
    }
    is(scalar(keys %a), 5, sprintf('PostgreSQL back: all 5 acks arrived (%.1f s after start_again)', 15 - ($deadline - now())));
    my @bad = grep { !$a{"d$_"} || $a{"d$_"}{id} ne $got[$_]{id} } grep { $got[$_] } 0 .. $#d;
    ok(!@bad && @got == 5, 'late ack ids are the delivered ids');
    is(wait_pg_status($A, 'up', 5), 'up', 'status: postgres "up" again');

    my $db = db_by_id();
    my @ids = map { $_->{id} } @got;
    is(join(',', map { scalar @{ $db->{$_} || [] } } @ids), '1,1,1,1,1', 'each of the 5 stored exactly once');
    my %mine = map { $_ => 1 } @ids;
    my @order = map { $_->{content} } grep { $mine{ $_->{id} } } db_rows();
    is("@order", "@d", 'stored in acceptance order (ORDER BY created_at)');
    $acked += 5;
    is(db_count(), $acked, "count(*) = $acked acks");
}

# a burst with PostgreSQL stopped under it: late acks, nothing lost or doubled
{
    my $n = 200;
    ok(join_room($ann, 'burst'), 'ann joined burst');
    for my $i (0 .. $n - 1) {
        send_json($ann, type => 'send', room => 'burst', content => "burst-$i", ref => "burst$i");
        $pg->stop if $i == $n / 2;
    }
    $pg->start_again;
    my @acks = collect($ann, sub { $_[0]{type} eq 'ack' && ($_[0]{ref} // '') =~ /^burst/ }, $n, 15);
    my %ref; $ref{ $_->{ref} }++ for @acks;
    is(scalar(keys %ref) . '/' . scalar(@acks), "$n/$n", "burst of $n with PostgreSQL stopped mid-way: every send acked once");
    my @rows = grep { $_->{room} eq 'burst' } db_rows();
    my %c; $c{ $_->{content} }++ for @rows;
    my @bad = grep { ($c{"burst-$_"} || 0) != 1 } 0 .. $n - 1;
    ok(!@bad && @rows == $n, "each of the $n stored exactly once") or diag(scalar(@rows) . " rows; wrong: @bad[0 .. ($#bad < 9 ? $#bad : 9)]");
    my %acked_id = map { $_->{id} => 1 } @acks;
    is(scalar(grep { !$acked_id{ $_->{id} } } @rows), 0, 'every stored burst row had its ack');
    $acked += @acks;
    is(db_count(), $acked, "count(*) = $acked acks");
    settle(0.2, $ann, $bob);
    extract($_, sub { 1 }) for $ann, $bob;
}

# --- 4. nginx restarted: history from PostgreSQL ---------------------------------

my @h = map { $live{ sprintf 'h%02d', $_ } || { content => '?', id => 'missing' } } 0 .. 11;
$_->{ws}->disconnect for $ann, $bob, $carol;
$A->stop;
my $A2 = Test::Chat::Nginx->new(nginx_conf($pg->conninfo));
ok(wait_connected($A2, 4, 10), 'nginx restarted: both workers connected to PostgreSQL');
is(status($A2)->{postgres}, 'up', '... status postgres "up"');

sub ids { join ' ', map { $_ ? $_->{content} : '?' } @_ }

{
    my $dan = client($A2, 'dan');
    my $j = join_room($dan, 'hist', history => 5);
    is($j && $j->{members}, 1, 'dan joined hist after the restart');
    my $hr = take($dan, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 3);
    my @m = $hr ? @{ $hr->{messages} || [] } : ();
    ok($hr, 'join with history 5: history reply');
    is(ids(@m), ids(@h[7 .. 11]), '... the last 5 messages from PostgreSQL, oldest first');
    is(join("\n", map { $JSON->encode($_) } @m), join("\n", map { $JSON->encode($_) } @h[7 .. 11]),
       '... each exactly the message object delivered live (id, user, content, ts)');
    ok($hr && $hr->{complete}, '... complete true');

    # since an id from before the restart, with a live message racing the join
    my $eli = client($A2, 'eli');
    send_json($eli, type => 'join', room => 'hist', since => $h[3]{id});
    send_json($dan, type => 'send', room => 'hist', content => 'live-1', ref => 'l1');
    poll(5, sub {
        pump($eli, 0.1);
        my @live = grep { $_->{type} eq 'message' && $_->{content} eq 'live-1' } @{ $eli->{all} };
        my @hist = grep { $_->{type} eq 'history' } @{ $eli->{all} };
        (@hist && (@live || grep { $_->{content} eq 'live-1' } @{ $hist[0]{messages} || [] })) ? 1 : 0;
    }, 0.01);
    settle(0.3, $eli);
    my @seq = grep { $_->{type} =~ /^(joined|history|message)$/ && $_->{room} eq 'hist' } @{ $eli->{all} };
    my ($hr2) = grep { $_->{type} eq 'history' } @seq;
    my @hm = $hr2 ? @{ $hr2->{messages} || [] } : ();
    my $order = join ' ', map { $_->{type} eq 'message' ? "message:$_->{content}" : $_->{type} } @seq;
    is($seq[0] && $seq[0]{type}, 'joined', 'join with since: joined first');
    like($order, qr/^joined history( message:live-1)?$/, '... then history, before any live message of the room')
        or diag($order);
    is(ids(grep { $_->{content} ne 'live-1' } @hm), ids(@h[4 .. 11]),
       '... exactly the messages after the given id, from PostgreSQL');
    is(scalar(grep { $_->{content} eq 'live-1' } @hm, grep { $_->{type} eq 'message' } @seq), 1,
       '... the message sent during the join exactly once (history or live)');
    ok($hr2 && $hr2->{complete}, '... complete true');

    # history with before
    send_json($dan, type => 'history', room => 'hist', before => $h[8]{id}, limit => 3);
    my $r = take($dan, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 3);
    send_json($dan, type => 'history', room => 'hist', before => $h[8]{id});
    my $r2 = take($dan, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 3);
    my $kim = client($A2, 'kim');
    send_json($kim, type => 'join', room => 'hist', since => 'no-such-id');
    my $r3 = take($kim, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 3);
    is(ids($r ? @{ $r->{messages} || [] } : ()), ids(@h[5 .. 7]), 'history before h08, limit 3: h05 h06 h07');
    is(ids($r2 ? @{ $r2->{messages} || [] } : ()), ids(@h[0 .. 7]), 'history before h08: h00 .. h07, oldest first');
    ok($r2 && $r2->{complete}, '... complete true');
    ok($r3 && !$r3->{complete}, 'join with since an id nobody knows: complete false');
    $_->{ws}->disconnect for $dan, $eli, $kim;
}
$A2->stop;

# --- 4b. a slow connection: status and reads while the worker connects ---------
#
# PostgreSQL behind a relay that holds every new connection for 1.5 s: the
# worker is still connecting when the first client arrives.

{
    my @last5 = (@h[8 .. 11], { content => 'live-1' });    # live-1: part 4
    my ($proxy, $pport) = delay_proxy($pg->port, 1.5);
    my $S = Test::Chat::Nginx->new(nginx_conf($pg->conninfo(port => $pport), workers => 1));
    my $st = status($S)->{postgres} // '(no status)';
    my $lee = client($S, 'lee');
    send_json($lee, type => 'join', room => 'hist', history => 5);
    my $hr = take($lee, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 5);
    my $connected = wait_connected($S, 1, 6);
    isnt($st, 'up', 'worker still connecting: status postgres not "up"');
    is(ids($hr ? @{ $hr->{messages} || [] } : ()), ids(@last5),
       'join with history 5 while the worker connects: the 5 messages from PostgreSQL, once connected');
    my $has_all = $hr && ids(@{ $hr->{messages} || [] }) eq ids(@last5);
    ok($hr && ($hr->{complete} ? $has_all : !$has_all),
       '... complete true only if the reply has them') or diag($JSON->encode($hr || {}));
    ok($connected, 'slow connection: the worker connected');
    my $mo = client($S, 'mo');
    join_room($mo, 'hist', history => 5);
    my $hr2 = take($mo, sub { $_[0]{type} eq 'history' && $_[0]{room} eq 'hist' }, 3);
    is(ids($hr2 ? @{ $hr2->{messages} || [] } : ()), ids(@last5), '... then a join with history 5 reads PostgreSQL');
    $_->{ws}->disconnect for $lee, $mo;
    $S->stop;
    kill 'KILL', -$proxy;
    waitpid $proxy, 0;
}

# --- 3. chat_postgres_queue full: unavailable --------------------------------------

{
    my $Q = Test::Chat::Nginx->new(nginx_conf($pg->conninfo, queue => 3, workers => 1));
    ok(wait_connected($Q, 1, 10), 'queue 3, one worker: connected to PostgreSQL');
    my $fay = client($Q, 'fay');
    my $gus = client($Q, 'gus');
    ok(join_room($fay, 'q') && join_room($gus, 'q'), 'fay and gus joined q');

    $pg->stop;
    for my $i (1 .. 3) {
        send_json($fay, type => 'send', room => 'q', content => "q$i", ref => "q$i");
    }
    my @got = collect($gus, is_msg('q'), 3, 3);
    is(ids(@got), 'q1 q2 q3', 'PostgreSQL down: sends 1-3 delivered live');
    send_json($fay, type => 'send', room => 'q', content => 'q4', ref => 'q4');
    my $e = take($fay, sub { $_[0]{type} eq 'error' }, 3);
    is($e && $e->{code}, 'unavailable', 'send 4: error "unavailable"');
    is($e && $e->{ref}, 'q4', '... with the ref echoed');
    settle(0.7, $fay, $gus);
    is(scalar(grep { $_->{content} eq 'q4' } extract($gus, is_msg('q'))), 0, 'send 4 not delivered to the other member');
    my @own = extract($fay, is_msg('q'));
    is(ids(@own), 'q1 q2 q3', '... nor to the sender');
    is(scalar(extract($fay, sub { $_[0]{type} eq 'ack' })), 0, 'no ack while PostgreSQL is down');
    is(wait_pg_status($Q, 'down', 3), 'down', 'status: postgres "down"');

    $pg->start_again;
    my @acks = collect($fay, sub { $_[0]{type} eq 'ack' }, 3, 15);
    is(join(' ', map { "$_->{ref}=$_->{id}" } @acks), join(' ', map { "q$_=$got[$_ - 1]{id}" } 1 .. @got),
       'PostgreSQL back: the 3 acks arrive, with the delivered ids');
    my @rows = grep { $_->{room} eq 'q' } db_rows();
    is(ids(@rows), 'q1 q2 q3', 'rows: q1 q2 q3, not q4');
    send_json($fay, type => 'send', room => 'q', content => 'q5', ref => 'q5');
    ok(take($fay, is_ack('q5'), 5), 'after the backlog is stored, sends are accepted again');
    $Q->stop;
}

# --- 5. bad conninfo, wrong password, URI -----------------------------------------

for my $bad ('host=127.0.0.1 port=notaport dbname=chat', 'nonsense',
             'host=127.0.0.1 nosuchoption=1', 'postgresql://[::1')
{
    my $t = Test::Chat::Nginx->new(nginx_conf($bad), start => 0);
    my @lines = split /\n/, $t->conf_text;
    my ($line) = grep { $lines[$_ - 1] =~ /^\s*chat_postgres\s/ } 1 .. @lines;
    $line //= 0;
    my ($rc, $out) = $t->nginx_t;
    my $conf = $t->conf_path;
    ok($rc != 0, "chat_postgres \"$bad\": nginx -t fails");
    like($out, qr/invalid PostgreSQL conninfo.* in \Q$conf\E:$line\b/,
         '... "invalid PostgreSQL conninfo" with file:line') or diag($out);
    $t->cleanup;
}
{
    my $t = Test::Chat::Nginx->new(nginx_conf($pg->conninfo, queue => 'many'), start => 0);
    my ($rc, $out) = $t->nginx_t;
    my $conf = $t->conf_path;
    my @lines = split /\n/, $t->conf_text;
    my ($line) = grep { $lines[$_ - 1] =~ /^\s*chat_postgres_queue\s/ } 1 .. @lines;
    $line //= 0;
    ok($rc != 0 && $out =~ /\[emerg\].*"many".* in \Q$conf\E:$line\b/, 'chat_postgres_queue many: nginx -t error with file:line')
        or diag($out);
    $t->cleanup;
}

{
    my $W = Test::Chat::Nginx->new(nginx_conf($pg->conninfo(password => 'wrong'), workers => 1));
    my $l = $W->wait_for_log(qr/\[error\].*password authentication failed/, timeout => 10);
    ok($l, 'wrong password: [error] line with libpq\'s message') or diag($W->error_log);
    is(wait_pg_status($W, 'down', 5), 'down', 'status: postgres "down"');
    my $hal = client($W, 'hal');
    my $ivy = client($W, 'ivy');
    ok(join_room($hal, 'w') && join_room($ivy, 'w'), 'hal and ivy joined w');
    send_json($hal, type => 'send', room => 'w', content => 'still chatting', ref => 'w1');
    my $m = take($ivy, is_msg('w'), 3);
    is($m && $m->{content}, 'still chatting', 'live chat works: ivy got the message');
    my $own = take($hal, is_msg('w'), 3);
    is($own && $own->{content}, 'still chatting', '... and so did the sender');
    $W->stop;
}

{
    my $uri = sprintf('postgresql://%s:%s@127.0.0.1:%d/%s', $pg->user, $pg->password, $pg->port, $pg->dbname);
    my $U = Test::Chat::Nginx->new(nginx_conf($uri, workers => 1));
    ok(wait_connected($U, 1, 10), 'URI conninfo: connected to PostgreSQL');
    my $jo = client($U, 'jo');
    join_room($jo, 'u');
    send_json($jo, type => 'send', room => 'u', content => 'via uri', ref => 'u1');
    my $a = take($jo, is_ack('u1'), 5);
    my $row = $a && (db_by_id()->{ $a->{id} } || [])->[0];
    is($row ? "$row->{room}|$row->{user}|$row->{content}" : '(no row)', 'u|jo|via uri', '... acked and stored');
    is(status($U)->{postgres}, 'up', '... status postgres "up"');
    $U->stop;
}

diag(sprintf('postgres.t took %.1f s', now() - $T0));
