# permessage-deflate (RFC 7692, SPEC §9): negotiation of every offer of
# every Sec-WebSocket-Extensions header; outgoing messages of at least
# chat_deflate_min_size compressed once and the same bytes sent to every
# member that negotiated it (members without compression get the plain
# frame, with identical content); history replies compressed; incoming
# compressed messages, fragmented with pings between the fragments,
# inflated with the output bounded by chat_max_message_size (1009, the
# decompression bomb), RSV1 misuse 1002, a corrupt stream 1007, UTF-8
# checked on the inflated text across fragments; status bytes.  A client
# that inflates: Compress::Raw::Zlib (core perl).

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Compress::Raw::Zlib;
use JSON::PP ();
use Test::Chat::Nginx;
use Test::Chat::WS;
use Test::Chat::Util qw(status poll);

my $JSON = JSON::PP->new->utf8->canonical;

my $t = Test::Chat::Nginx->new(
    http   => 'chat_zone chat 8m;',
    server => <<'_EOS_',
        location = /chat {
            chat chat;
            chat_user $arg_user;
            chat_deflate on;
            chat_max_message_size 1k;
            chat_history 200;
            chat_rate off;
        }
        location = /big {
            chat chat;
            chat_user $arg_user;
            chat_deflate on;
            chat_deflate_min_size 64;
            chat_deflate_level 9;
            chat_max_message_size 64k;
            chat_history 200;
        }
        location = /off {
            chat chat;
            chat_user $arg_user;
            chat_max_message_size 1k;
            chat_history 200;
        }
        location = /status { chat_status chat; }
_EOS_
    workers   => 2,
    log_level => 'info',
);

my $BASE = 'permessage-deflate; server_no_context_takeover; '
         . 'client_no_context_takeover';

# ---------------------------------------------------------------------------
# negotiation: the offer(s) sent => the extension answered (undef: none)

my @table = (
    [ undef,                                         undef ],
    [ 'permessage-deflate',                          $BASE ],
    [ 'permessage-deflate; client_max_window_bits',
      "$BASE; client_max_window_bits=15" ],
    [ 'permessage-deflate; client_max_window_bits=10',
      "$BASE; client_max_window_bits=10" ],
    [ 'permessage-deflate; server_max_window_bits=10',
      "$BASE; server_max_window_bits=10" ],
    [ 'permessage-deflate; server_max_window_bits="12"; '
      . 'client_max_window_bits="9"',
      "$BASE; server_max_window_bits=12; client_max_window_bits=9" ],
    [ 'permessage-deflate;server_no_context_takeover;'
      . 'client_no_context_takeover',                $BASE ],
    [ 'PerMessage-Deflate ; Server_Max_Window_Bits = 15',
      "$BASE; server_max_window_bits=15" ],
    # what Chromium and Firefox send
    [ 'permessage-deflate; client_max_window_bits',
      "$BASE; client_max_window_bits=15" ],
    # server_max_window_bits=8: zlib cannot, and the answer may not raise it
    [ 'permessage-deflate; server_max_window_bits=8', undef ],
    [ 'permessage-deflate; server_max_window_bits=8, permessage-deflate',
      $BASE ],
    [ 'permessage-deflate; server_max_window_bits=8, '
      . 'permessage-deflate; server_max_window_bits=9',
      "$BASE; server_max_window_bits=9" ],
    # unknown extensions and parameters, invalid values, duplicates
    [ 'x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=12',
      "$BASE; client_max_window_bits=12" ],
    [ 'permessage-deflate; foo=1', undef ],
    [ 'permessage-deflate; foo, permessage-deflate', $BASE ],
    [ 'permessage-deflate; server_no_context_takeover; '
      . 'server_no_context_takeover', undef ],
    [ 'permessage-deflate; server_no_context_takeover=1', undef ],
    [ 'permessage-deflate; server_max_window_bits', undef ],
    [ 'permessage-deflate; server_max_window_bits=16', undef ],
    [ 'permessage-deflate; server_max_window_bits=08', undef ],
    [ 'permessage-deflate; server_max_window_bits=9; '
      . 'server_max_window_bits=10', undef ],
    [ 'permessage-deflate; client_max_window_bits=7', undef ],
    [ 'permessage-deflate; client_max_window_bits=1a', undef ],
    [ 'permessage-deflate; client_max_window_bits="1', undef ],
    [ 'deflate-stream', undef ],
    [ 'permessage-deflate;', undef ],
    [ '"permessage-deflate", permessage-deflate', $BASE ],
    # a comma inside a quoted value does not end the offer
    [ 'foo; a="x, permessage-deflate", permessage-deflate; '
      . 'client_max_window_bits=11',
      "$BASE; client_max_window_bits=11" ],
    [ ',, permessage-deflate ,', $BASE ],
);

for my $row (@table) {
    my ($offer, $want) = @$row;
    my $ws = $t->ws(path => '/chat?user=neg',
                    defined $offer
                    ? (headers => { 'Sec-WebSocket-Extensions' => $offer })
                    : ());
    my $name = defined $offer ? "offer '$offer'" : 'no offer';
    ok($ws->ok, "$name: 101") or diag($ws->error);
    is($ws->header('sec-websocket-extensions'), $want,
       "$name: " . (defined $want ? 'accepted' : 'no extension'));
    $ws->close;
}

# several headers: the first acceptable offer in header order
sub raw_offers {
    my ($path, @offers) = @_;
    my $key = 'dGhlIHNhbXBsZSBub25jZQ==';
    my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\n"
            . "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            . "Sec-WebSocket-Key: $key\r\nSec-WebSocket-Version: 13\r\n"
            . join('', map { "Sec-WebSocket-Extensions: $_\r\n" } @offers)
            . "\r\n";
    return $t->ws(raw_request => $req);
}

{
    my $ws = raw_offers('/chat?user=neg', 'foo; bar',
                        'permessage-deflate; server_max_window_bits=8',
                        'permessage-deflate; server_max_window_bits=11',
                        'permessage-deflate');
    is($ws->header('sec-websocket-extensions'),
       "$BASE; server_max_window_bits=11",
       'several headers: the first acceptable offer of all of them');
    $ws->close;

    $ws = raw_offers('/off?user=neg', 'permessage-deflate');
    ok($ws->ok, 'chat_deflate off: 101');
    is($ws->header('sec-websocket-extensions'), undef,
       'chat_deflate off: the offer is declined');
    $ws->close;
}

# ---------------------------------------------------------------------------
# a client that inflates

sub inflate_raw {
    my ($data, $bits) = @_;
    my ($i, $st) = Compress::Raw::Zlib::Inflate->new(
        -WindowBits => -($bits || 15), -Bufsize => 65536,
        -LimitOutput => 0, -ConsumeInput => 1);
    die "inflate init: $st" if $st != Z_OK;
    my $in = $data . "\x00\x00\xff\xff";
    my $out = '';
    $st = $i->inflate($in, $out);
    return undef unless $st == Z_OK || $st == Z_STREAM_END
                        || $st == Z_BUF_ERROR;
    return $out;
}

sub deflate_raw {
    my ($data, %o) = @_;
    my ($d, $st) = Compress::Raw::Zlib::Deflate->new(
        -WindowBits => -15, -Level => $o{level} || 6, -AppendOutput => 1);
    die "deflate init: $st" if $st != Z_OK;
    my $out = '';
    $d->deflate($data, $out) == Z_OK or die 'deflate';
    $d->flush($out, Z_SYNC_FLUSH) == Z_OK or die 'flush';
    die 'no sync tail' unless substr($out, -4) eq "\x00\x00\xff\xff";
    return substr($out, 0, -4);
}

# next data message: { json, plain (the text), compressed, wire (payload
# length on the wire) }, or undef
sub zrecv {
    my ($ws, $timeout, $bits) = @_;
    my $m = $ws->recv_message(timeout => $timeout || 3);
    return undef unless $m && $m->{opcode} == 1;
    my $r = { compressed => ($m->{rsv} & 4) ? 1 : 0,
              wire => length $m->{payload}, rsv => $m->{rsv},
              raw => $m->{payload} };
    $r->{plain} = $r->{compressed} ? inflate_raw($m->{payload}, $bits)
                                   : $m->{payload};
    return undef unless defined $r->{plain};
    $r->{json} = eval { $JSON->decode($r->{plain}) };
    return $r;
}

# the first message the predicate accepts: from what was set aside, else
# from the wire (setting aside the others)
sub zrecv_until {
    my ($ws, $pred, $bits) = @_;
    my $box = $ws->{zinbox} ||= [];
    for my $i (0 .. $#$box) {
        next unless $box->[$i]{json} && $pred->($box->[$i]{json});
        return splice @$box, $i, 1;
    }
    my $deadline = Time::HiRes::time() + 3;
    while (Time::HiRes::time() < $deadline) {
        my $r = zrecv($ws, $deadline - Time::HiRes::time(), $bits) or last;
        return $r if $r->{json} && $pred->($r->{json});
        push @$box, $r;
    }
    return undef;
}

sub zconn {
    my ($path, $user, $offer) = @_;
    my $ws = $t->ws(path => "$path?user=$user",
                    defined $offer
                    ? (headers => { 'Sec-WebSocket-Extensions' => $offer })
                    : ());
    die "$user: " . ($ws->error || '') unless $ws->ok;
    my $w = zrecv($ws);
    die "$user: no welcome" unless $w && $w->{json}{type} eq 'welcome';
    return $ws;
}

sub zjoin {
    my ($ws, $room, %o) = @_;
    $ws->send_json({ type => 'join', room => $room, %o });
    return zrecv_until($ws, sub { $_[0]{type} eq 'joined' });
}

my $Ref = 0;

# a compressed send; its ack
sub zsend {
    my ($ws, $room, $content) = @_;
    my $ref = 'r' . ++$Ref;
    my $text = $JSON->encode({ type => 'send', room => $room,
                               content => $content, ref => $ref });
    $ws->send_frame(opcode => 1, rsv => 4, payload => deflate_raw($text));
    return zrecv_until($ws, sub { $_[0]{type} =~ /^(ack|error)$/
                                  && ($_[0]{ref} || '') eq $ref });
}

# ---------------------------------------------------------------------------
# compressed send, compressed fan-out shared by the members that negotiated
# it, the plain frame to the others, identical content

my $PMD0 = 'permessage-deflate';
my $long = 'the quick brown fox jumps over the lazy dog; ' x 12;    # 540

{
    my $a = zconn('/chat', 'ann', 'permessage-deflate');
    my $b = zconn('/chat', 'bob', 'permessage-deflate; client_max_window_bits');
    my $c = zconn('/chat', 'cid');                          # no compression
    my $d = zconn('/chat', 'dan', 'permessage-deflate; server_max_window_bits=9');
    ok(zjoin($_, 'mix'), 'joined mix') for $a, $b, $c, $d;

    my $ack = zsend($a, 'mix', $long);
    is($ack && $ack->{json}{type}, 'ack', 'a compressed send is acked');

    my %got;
    for my $p ([ann => $a], [bob => $b], [cid => $c]) {
        $got{ $p->[0] } = zrecv_until($p->[1], sub {
            $_[0]{type} eq 'message' && $_[0]{content} eq $long });
    }
    $got{dan} = zrecv_until($d, sub {
        $_[0]{type} eq 'message' && $_[0]{content} eq $long }, 9);

    ok($got{$_}, "$_ got the message") for qw(ann bob cid dan);
    ok($got{ann}{compressed} && $got{bob}{compressed} && $got{dan}{compressed},
       'members that negotiated compression get it compressed (RSV1)');
    ok(!$got{cid}{compressed} && $got{cid}{rsv} == 0,
       'the member without it gets the plain frame');
    is($got{ann}{raw}, $got{bob}{raw},
       'the same compressed bytes go to every member (compressed once)');
    ok($got{ann}{wire} * 3 < $got{cid}{wire},
       "compressed $got{ann}{wire} bytes, plain $got{cid}{wire}");
    is($got{$_}{plain}, $got{cid}{plain},
       "$_: the inflated message is the plain one, byte for byte")
        for qw(ann bob dan);

    my $small = zsend($a, 'mix', 'hi');
    is($small && $small->{json}{type}, 'ack', 'a small compressed send');
    my $s = zrecv_until($b, sub { $_[0]{type} eq 'message'
                                  && $_[0]{content} eq 'hi' });
    ok($s && !$s->{compressed},
       'a message under chat_deflate_min_size goes uncompressed');

    # a plain (RSV1 clear) message on a connection with compression
    $a->send_json({ type => 'send', room => 'mix', content => 'plain',
                    ref => 'p1' });
    my $pa = zrecv_until($a, sub { $_[0]{type} eq 'ack' });
    is($pa && $pa->{json}{ref}, 'p1', 'uncompressed messages still work');

    $_->close for $a, $b, $c, $d;
}

# a window of 9 bits for messages longer than 512 bytes: a twin of its own
{
    my $w9 = zconn('/big', 'w9', 'permessage-deflate; server_max_window_bits=9');
    my $w15 = zconn('/big', 'w15', 'permessage-deflate');
    zjoin($_, 'win') for $w9, $w15;
    # repeats 1,500 bytes apart: a 15-bit window finds them, 9 bits not
    my $blk = join '', map { chr(65 + ($_ * 7919) % 26) } 1 .. 1500;
    my $content = $blk . $blk . $blk;
    my $ack = zsend($w15, 'win', $content);
    is($ack && $ack->{json}{type}, 'ack', '4.5 KB compressed send');
    my $m15 = zrecv_until($w15, sub { $_[0]{type} eq 'message' }, 15);
    my $m9 = zrecv_until($w9, sub { $_[0]{type} eq 'message' }, 9);
    ok($m15 && $m15->{compressed}
       && $m15->{json}{content} eq $content, 'window 15: compressed, intact');
    ok($m9 && $m9->{compressed} && $m9->{json}{content} eq $content,
       'window 9: inflates with a 512-byte window, intact');
    # a twin made for 9 bits also serves 15 (the reverse only for short
    # payloads): whichever member came first, both inflate
    ok($m15 && $m9 && ($m15->{raw} eq $m9->{raw}
                       || length $m9->{raw} != length $m15->{raw}),
       'the 9-bit member shares a 9-bit twin or has one of its own');
    $_->close for $w9, $w15;
}

# once per message and worker, whatever the number of members: the debug
# log of a one-worker server has one "deflated" line per message

{
    my $d = Test::Chat::Nginx->new(
        http   => 'chat_zone chat 4m;',
        server => <<'_EOS_',
            location = /chat {
                chat chat;
                chat_user $arg_user;
                chat_deflate on;
            }
_EOS_
        workers   => 1,
        log_level => 'debug',
    );
    my @m = map {
        my $ws = $d->ws(path => "/chat?user=m$_",
                        headers => { 'Sec-WebSocket-Extensions' => $PMD0 });
        zrecv($ws);
        $ws->send_json({ type => 'join', room => 'once' });
        zrecv_until($ws, sub { $_[0]{type} eq 'joined' });
        $ws;
    } 1 .. 8;
    my $before = () = $d->error_log =~ /chat wire: deflated/g;
    for my $i (1 .. 3) {
        $m[0]->send_json({ type => 'send', room => 'once',
                           content => "$i $long" });
    }
    my $all = 1;
    for my $ws (@m) {
        for my $i (1 .. 3) {
            my $r = zrecv_until($ws, sub { $_[0]{type} eq 'message'
                                           && $_[0]{content} eq "$i $long" });
            $all &&= $r && $r->{compressed};
        }
    }
    ok($all, '8 members got 3 compressed messages');
    my $after = () = $d->error_log =~ /chat wire: deflated/g;
    is($after - $before, 3, '3 messages to 8 members: deflated 3 times');
    $_->close for @m;

    # 40 clients stop in the middle of a compressed message: the first 32
    # keep an inflater, the others' bytes wait (inflated when complete);
    # all of them are right in the end, and so is a bomb among them
    my @s = map {
        my $ws = $d->ws(path => "/chat?user=s$_",
                        headers => { 'Sec-WebSocket-Extensions' => $PMD0 });
        zrecv($ws);
        $ws->send_json({ type => 'join', room => 'stall' });
        zrecv_until($ws, sub { $_[0]{type} eq 'joined' });
        $ws;
    } 1 .. 40;
    my @z = map {
        deflate_raw($JSON->encode({ type => 'send', room => 'stall',
                                    ref => "s$_", content => "stalled $_ "
                                    . ('é' x 20) }))
    } 1 .. 40;
    for my $i (0 .. 39) {
        $s[$i]->send_raw($s[$i]->build_frame(opcode => 1, rsv => 4, fin => 0,
                         payload => substr($z[$i], 0, 7)));
    }
    my $bombz = deflate_raw("\0" x 100000);
    my $bomb = $d->ws(path => '/chat?user=bomb',
                      headers => { 'Sec-WebSocket-Extensions' => $PMD0 });
    zrecv($bomb);
    $bomb->send_raw($bomb->build_frame(opcode => 1, rsv => 4, fin => 0,
                                       payload => substr($bombz, 0, 10)));
    select undef, undef, undef, 0.2;
    my $acked = 0;
    for my $i (reverse 0 .. 39) {
        $s[$i]->send_raw($s[$i]->build_frame(opcode => 0,
                         payload => substr($z[$i], 7)));
        my $r = zrecv_until($s[$i], sub { $_[0]{type} =~ /^(ack|error)$/ });
        $acked++ if $r && $r->{json}{type} eq 'ack'
                    && $r->{json}{ref} eq 's' . ($i + 1);
    }
    is($acked, 40, '40 compressed messages stalled halfway, then acked');
    my $m = zrecv_until($s[0], sub { $_[0]{type} eq 'message'
                                     && $_[0]{content} =~ /^stalled 40 / });
    ok($m && $m->{json}{content} eq 'stalled 40 ' . ('é' x 20),
       'a message inflated when complete is intact') or diag(explain($m));
    $bomb->send_raw($bomb->build_frame(opcode => 0,
                                       payload => substr($bombz, 10)));
    is(scalar $bomb->expect_close(timeout => 3), 1009,
       'a bomb whose bytes waited: 1009 when it is complete');
    $_->close for @s;
    $d->stop;
}

# ---------------------------------------------------------------------------
# history replies: compressed, identical to the plain one

{
    my $a = zconn('/chat', 'hist', 'permessage-deflate');
    zjoin($a, 'h');
    for my $i (1 .. 100) {
        my $r = zsend($a, 'h', "history message number $i, some chat text");
        last unless $r && $r->{json}{type} eq 'ack';
    }
    $a->close;

    my $z = zconn('/chat', 'hz', 'permessage-deflate');
    my $p = zconn('/chat', 'hp');
    my ($hz, $hp);
    for my $x ([$z, \$hz], [$p, \$hp]) {
        $x->[0]->send_json({ type => 'join', room => 'h', history => 100 });
        ${ $x->[1] } = zrecv_until($x->[0], sub { $_[0]{type} eq 'history' });
    }
    ok($hz && $hz->{compressed}, 'the history reply is compressed');
    is(scalar @{ $hz->{json}{messages} || [] }, 100, '100 messages');
    is($hz->{plain}, $hp->{plain}, 'identical to the plain reply');
    ok($hz->{wire} * 3 <= $hp->{wire},
       "100-message history: $hz->{wire} bytes compressed, "
       . "$hp->{wire} plain (at least 3x smaller)");
    note("history reply: $hz->{wire} vs $hp->{wire} bytes");
    $_->close for $z, $p;
}

# ---------------------------------------------------------------------------
# fragmented compressed messages, pings between the fragments; UTF-8 split
# across fragments of the inflated text

{
    my $a = zconn('/chat', 'frag', 'permessage-deflate');
    zjoin($a, 'f');
    my $text = $JSON->encode({ type => 'send', room => 'f',
                               content => "fragments " . ('abc' x 100),
                               ref => 'fr' });
    my $z = deflate_raw($text);
    my @parts = (substr($z, 0, 10), substr($z, 10, 20), substr($z, 30));
    my $bytes = '';
    for my $i (0 .. $#parts) {
        $bytes .= $a->build_frame(opcode => $i ? 0 : 1,
                                  rsv => $i ? 0 : 4,
                                  fin => $i == $#parts ? 1 : 0,
                                  payload => $parts[$i]);
        $bytes .= $a->build_frame(opcode => 9, payload => "p$i")
            if $i < $#parts;
    }
    $a->send_raw($bytes);
    my $ack = zrecv_until($a, sub { $_[0]{type} eq 'ack' });
    is($ack && $ack->{json}{ref}, 'fr',
       'a compressed message in 3 fragments with pings between: acked');
    my @pongs = grep { $_->{opcode} == 10 } @{ $a->skipped_frames };
    # two pings read at once may get one pong (the latest, SPEC §8)
    ok(@pongs >= 1 && $pongs[-1]{payload} eq 'p1',
       'the pings between the fragments are answered');

    # "é" (c3 a9) split between two deflate flushes, in two fragments
    my ($d) = Compress::Raw::Zlib::Deflate->new(-WindowBits => -15,
                                                -AppendOutput => 1);
    my $msg = qq({"type":"send","room":"f","ref":"u8","content":"caf\xc3\xa9!"});
    my $cut = index($msg, "\xa9");
    my ($o1, $o2) = ('', '');
    $d->deflate(substr($msg, 0, $cut), $o1);
    $d->flush($o1, Z_SYNC_FLUSH);
    $d->deflate(substr($msg, $cut), $o2);
    $d->flush($o2, Z_SYNC_FLUSH);
    $o2 = substr($o2, 0, -4);
    $a->send_raw($a->build_frame(opcode => 1, rsv => 4, fin => 0,
                                 payload => $o1)
                 . $a->build_frame(opcode => 0, payload => $o2));
    $ack = zrecv_until($a, sub { $_[0]{type} eq 'ack' });
    is($ack && $ack->{json}{ref}, 'u8',
       'UTF-8 split across compressed fragments is accepted');
    $a->close;
}

# ---------------------------------------------------------------------------
# closes: the bomb (1009), RSV1 misuse (1002), corrupt stream (1007)

sub expect_code {
    my ($path, $offer, $frames, $code, $name) = @_;
    my $ws = zconn($path, 'bad', $offer);
    $ws->send_raw(ref $frames eq 'CODE' ? $frames->($ws) : $frames);
    my ($got) = $ws->expect_close(timeout => 3);
    is($got, $code, $name);
}

my $PMD = 'permessage-deflate';

{
    # 1 MB of zeros: about 1 KB compressed, under the wire bound
    my $bomb = deflate_raw("\0" x (1 << 20), level => 9);
    note('bomb: ' . length($bomb) . ' bytes compressed');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => $bomb) },
                1009, 'a 1 KB frame that inflates to 1 MB: 1009');

    my $t0 = Time::HiRes::time();
    my $gbomb = deflate_raw("\0" x (32 << 20), level => 9);
    expect_code('/big', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => $gbomb) },
                1009, 'a ' . length($gbomb) . '-byte frame that inflates to '
                      . '32 MB, chat_max_message_size 64k: 1009');

    # just over, just under chat_max_message_size (1k)
    my $json = sub { my $n = shift; my $j = qq({"type":"send","room":"mix","content":"});
                     $j . ('y' x ($n - length($j) - 2)) . '"}' };
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => deflate_raw($json->(1025))) },
                1009, 'inflates to 1025 bytes: 1009');
    {
        my $ws = zconn('/chat', 'edge', $PMD);
        zjoin($ws, 'mix');
        $ws->send_frame(opcode => 1, rsv => 4,
                        payload => deflate_raw($json->(1024)));
        my $r = zrecv_until($ws, sub { $_[0]{type} =~ /^(ack|error)$/ });
        ok($r, 'inflates to exactly 1024 bytes: answered, not closed');
        $ws->close;
    }

    # the bomb, fragmented: 1009 as soon as the output passes the bound
    expect_code('/chat', $PMD, sub {
        my $ws = shift;
        my $z = deflate_raw('a' x 100000);
        join '', map { $ws->build_frame(opcode => $_ ? 0 : 1,
                                        rsv => $_ ? 0 : 4, fin => 0,
                                        payload => substr($z, $_ * 20, 20)) }
                 0 .. int(length($z) / 20);
    }, 1009, 'a fragmented bomb: 1009 before the message ends');

    # RSV1
    expect_code('/chat', undef,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => deflate_raw('{}')) },
                1002, 'RSV1 without negotiation: 1002');
    expect_code('/off', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => deflate_raw('{}')) },
                1002, 'RSV1 with chat_deflate off (offer declined): 1002');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 9, rsv => 4,
                                         payload => 'x') },
                1002, 'RSV1 on a ping: 1002');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 8, rsv => 4,
                                         payload => pack('n', 1000)) },
                1002, 'RSV1 on a close: 1002');
    expect_code('/chat', $PMD, sub {
        my $ws = shift;
        my $z = deflate_raw('{"type":"who","room":"x"}');
        $ws->build_frame(opcode => 1, rsv => 4, fin => 0,
                         payload => substr($z, 0, 5))
        . $ws->build_frame(opcode => 0, rsv => 4,
                           payload => substr($z, 5));
    }, 1002, 'RSV1 on a continuation frame: 1002');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 2,
                                         payload => '{}') },
                1002, 'RSV2 with compression negotiated: 1002');

    # corrupt streams, invalid UTF-8 inside a valid stream
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                                         payload => "\xff\xff\xff\xff\xff") },
                1007, 'a corrupt deflate stream: 1007');
    expect_code('/chat', $PMD, sub {
        my $z = deflate_raw('{"type":"who","room":"x"}' x 5);
        substr($z, 3, 4) = "\xff\x00\xfe\x01";
        $_[0]->build_frame(opcode => 1, rsv => 4, payload => $z);
    }, 1007, 'a damaged deflate stream: 1007');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                          payload => deflate_raw(qq({"content":"\xc3\x28"}))) },
                1007, 'invalid UTF-8 in the inflated text: 1007');
    expect_code('/chat', $PMD,
                sub { $_[0]->build_frame(opcode => 1, rsv => 4,
                          payload => deflate_raw(qq({"content":"\xe2\x82))) },
                1007, 'inflated text ending inside a UTF-8 sequence: 1007');
}

# ---------------------------------------------------------------------------
# the server is fine, and status counts bytes compressed and not

{
    my $ws = zconn('/chat', 'after', $PMD);
    ok(zjoin($ws, 'mix'), 'the server still serves after all that');
    $ws->close;

    my $st = status($t, '/status');
    ok(defined $st->{bytes_out} && defined $st->{bytes_out_raw}
       && defined $st->{bytes_in} && defined $st->{bytes_in_raw},
       'status has bytes_in, bytes_in_raw, bytes_out, bytes_out_raw');
    ok($st->{bytes_out} > 0 && $st->{bytes_out} < $st->{bytes_out_raw},
       "bytes_out $st->{bytes_out} < bytes_out_raw $st->{bytes_out_raw}");
    ok($st->{bytes_in} > 0 && $st->{bytes_in} < $st->{bytes_in_raw},
       "bytes_in $st->{bytes_in} < bytes_in_raw $st->{bytes_in_raw}");

    my $err = $t->error_log;
    unlike($err, qr/\[(alert|crit|emerg)\]|signal \d+/,
           'no alert, crit or crash in error.log');
}

done_testing();
