# nginx -s reload adopts the running zone only when it can (as limit_req
# refuses a zone whose key changed): a chat_max_message_size that needs a
# larger bus than the running zone has is refused with an [emerg] naming
# the directive and the zone, and the running configuration goes on; a
# zone of another size is a new zone, which any layout fits.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::Chat::Nginx;

plan tests => 14;

my $server = sub {
    my ($max) = @_;
    return <<"_EOC_";
        location = /chat {
            chat chat;
            chat_user \$arg_user;
            chat_max_message_size $max;
        }
_EOC_
};

# a 4m zone: its bus is a quarter of it (1m), enough for messages of up to
# 256k - 2k; 300k messages need 4 * (300k + 2k) of bus
my $t = Test::Chat::Nginx->new(http => 'chat_zone chat 4m;',
                               server => $server->('4k'));

sub client {
    my ($user) = @_;
    my $ws = $t->ws(path => "/chat?user=$user");
    return undef unless $ws->ok;
    my $w = $ws->recv_json(3);
    return undef unless $w && $w->{type} eq 'welcome';
    $ws->send_json({ type => 'join', room => 'r' });
    my $j = $ws->recv_json(3);
    return undef unless $j && $j->{type} eq 'joined';
    return $ws;
}

# the next frame of this type
sub next_of {
    my ($ws, $type) = @_;
    for (1 .. 20) {
        my $m = $ws->recv_json(3) or return undef;
        return $m if $m->{type} eq $type;
    }
    return undef;
}

my $a = client('alice');
ok($a, 'alice joined');

$a->send_json({ type => 'send', room => 'r', content => 'before', ref => '1' });
my $m = next_of($a, 'ack');
ok($m && $m->{ref} eq '1', 'a send before the reload is acked');

# raising chat_max_message_size past what the running zone's bus holds

ok(!$t->reload(http => 'chat_zone chat 4m;', server => $server->('300k')),
   'reload with chat_max_message_size 300k on the same zone is refused');
like($t->reload_error // '',
     qr/chat_max_message_size 307200 does not fit the running chat_zone "chat"/,
     'the error names the directive and the zone');
like($t->reload_error // '', qr/change its size or restart nginx/,
     'and says what to do');

# the running configuration goes on: the same workers, the same room

my $b = client('bob');
ok($b, 'a new client connects after the refused reload');

$a->send_json({ type => 'send', room => 'r', content => 'after', ref => '2' });
$m = next_of($b, 'message');
ok($m && $m->{content} eq 'after', 'alice and bob still chat');
$m = next_of($a, 'ack');
ok($m && $m->{ref} eq '2', 'and alice is acked');

# still the old limit: 5k is over 4k

$a->send_text('{"type":"send","room":"r","content":"' . ('x' x 5000) . '"}');
$a->recv_json(2) for 1 .. 2;
ok(defined $a->close_code && $a->close_code == 1009,
   'the old chat_max_message_size is still in force (1009)')
    or diag('close code: ' . ($a->close_code // 'none'));

# a zone of another size is a new zone: accepted, and 300k messages pass

ok($t->reload(http => 'chat_zone chat 5m;', server => $server->('300k')),
   'reload with a new zone size is accepted')
    or diag($t->reload_error);

my $c = client('carol');
ok($c, 'a client of the new configuration joins');

my $big = 'y' x (200 * 1024);
$c->send_json({ type => 'send', room => 'r', content => $big, ref => '3' });
$m = next_of($c, 'message');
ok($m && length($m->{content}) == length($big),
   'a 200k message goes through the new zone');
$m = next_of($c, 'ack');
ok($m && $m->{ref} eq '3', 'and is acked');

ok($t->stop, 'nginx stops');
