package Test::Chat::Relay;

# Helpers of the relay and storage tests that play another server on Redis
# (a made-up server id publishing payloads on a room's channel, writing
# its rows into the messages table as its storage would) and look at what
# members get.  See t/lib/README.md, section 6.

use strict;
use warnings;

use Exporter 'import';
use Test::Chat::Util qw(now poll);

our $VERSION = '0.01';

our @EXPORT_OK = qw(
    member live live_for history_of contents
    room_channel announce publish store_row
);

# a connection of $user that joined $room (more join fields in %join)
sub member {
    my ($t, $user, $room, %join) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    $ws->recv_json(3);
    $ws->send_json({ type => 'join', room => $room, %join });
    $ws->recv_until(sub { $_[0]{type} eq 'joined' }, 3);
    return $ws;
}

# the contents of the messages $ws gets until a quiet second, in order
sub live {
    my ($ws) = @_;
    my @c;
    while (my $m = $ws->recv_json(1)) {
        push @c, $m->{content} if $m->{type} eq 'message';
    }
    return join ' ', @c;
}

# the contents of the messages $ws gets within $secs, in order, the
# made-up server $sid announcing itself meanwhile (a heartbeat every
# half second at most, so that it is not taken for gone)
sub live_for {
    my ($redis, $sid, $ws, $secs) = @_;
    my @c;
    my $end = now() + $secs;
    while (now() < $end) {
        announce($redis, $sid);
        while (my $m = $ws->recv_json(0.5)) {
            push @c, $m->{content} if $m->{type} eq 'message';
        }
    }
    return join ' ', @c;
}

# the next history reply on $ws (5 s at most), or undef
sub history_of {
    my ($ws) = @_;
    return $ws->recv_until(sub { $_[0]{type} eq 'history' }, 5);
}

# the contents of a history reply's messages, in order
sub contents {
    my ($h) = @_;
    return join ' ', map { $_->{content} } @{ $h ? $h->{messages} : [] };
}

# the channel the relay subscribed to for $room (5 s at most to appear)
sub room_channel {
    my ($redis, $room) = @_;
    my $channel;
    poll(5, sub {
        ($channel) = grep { length } $redis->cli('PUBSUB', 'CHANNELS',
                                                 "*:r:$room");
        defined $channel;
    });
    return $channel // "chat:0:chat:r:$room";
}

# the made-up server $sid says it is there (a heartbeat)
sub announce {
    my ($redis, $sid) = @_;
    my ($servers) = grep { length } $redis->cli('PUBSUB', 'CHANNELS',
                                                '*:servers');
    $redis->cli('PUBLISH', $servers // 'chat:0:chat:servers', "$sid H");
}

# the made-up server $sid publishes message $id of $room: kind "M" (live)
# or "R" (republished); sent by "eve" at ts 1700000000001 unless %o says
# another user or ts
sub publish {
    my ($redis, $channel, $sid, $kind, $id, $room, $content, %o) = @_;
    my $user = $o{user} // 'eve';
    my $ts = $o{ts} // 1700000000001;
    $redis->cli('PUBLISH', $channel, "$sid $kind $id "
        . qq({"type":"message","room":"$room","id":"$id","user":"$user",)
        . qq("content":"$content","ts":$ts}));
}

# a row as the storage of the server that numbered $id would write it:
# created at the time in its number, or at $created_at (SQL) when given
sub store_row {
    my ($pg, $id, $room, $user, $content, $created_at) = @_;
    my ($n) = $id =~ /^(\d+)-/;
    $created_at //= "to_timestamp($n / 1000000.0)";
    $pg->psql("INSERT INTO messages (id, zone, room_id, user_id, content, "
              . "created_at) VALUES ('$id', 'chat', '$room', '$user', "
              . "'$content', $created_at)");
}

1;
