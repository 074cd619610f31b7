package Test::Chat::WS;

# Blocking-with-timeouts WebSocket (RFC 6455) test client.
# See t/lib/README.md for the API; t/001-wsclient.t for examples.

use strict;
use warnings;

use Carp qw(croak);
use IO::Socket::INET ();
use IO::Select ();
use Digest::SHA qw(sha1_base64);
use MIME::Base64 qw(encode_base64);
use JSON::PP ();
use Time::HiRes ();
use Errno ();
use Socket ();

our $VERSION = '0.01';

use constant GUID => '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

our %OPCODE = (
    continuation => 0, cont => 0, text => 1, binary => 2,
    close => 8, ping => 9, pong => 10,
);
our %OPNAME = (0 => 'continuation', 1 => 'text', 2 => 'binary',
               8 => 'close', 9 => 'ping', 10 => 'pong');

my $JSON = JSON::PP->new->utf8->canonical->allow_nonref;

# ---------------------------------------------------------------------------
# construction / handshake

sub expected_accept {
    my ($class_or_self, $key) = @_;
    return sha1_base64($key . GUID) . '=';
}

sub _random_bytes {
    my $n = shift;
    return join '', map { chr int rand 256 } 1 .. $n;
}

sub connect {
    my ($class, %o) = @_;
    my $self = bless {
        host      => defined $o{host} ? $o{host} : '127.0.0.1',
        port      => $o{port},
        path      => defined $o{path} ? $o{path} : '/',
        timeout   => defined $o{timeout} ? $o{timeout} : 3,
        auto_pong => $o{auto_pong} ? 1 : 0,
        buf       => '',
        eof       => 0,
        timed_out => 0,
        ok        => 0,
        skipped   => [],
        skipped_frames => [],
        headers   => {},
        header_list => [],
        body      => '',
        status    => undef,
        error     => undef,
    }, ref($class) || $class;
    croak "connect: port => N is required" unless $self->{port};

    my $deadline = Time::HiRes::time() + $self->{timeout};
    my $sock;
    if (defined $o{rcvbuf}) {
        # SO_RCVBUF must be set before connect() to limit the TCP window
        $sock = IO::Socket::INET->new(Proto => 'tcp');
        if ($sock) {
            setsockopt($sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), $o{rcvbuf})
                or croak "SO_RCVBUF: $!";
            my $addr = Socket::inet_aton($self->{host});
            unless ($addr && $sock->connect(Socket::pack_sockaddr_in($self->{port}, $addr))) {
                undef $sock;
            }
        }
    } else {
        $sock = IO::Socket::INET->new(
            PeerAddr => $self->{host}, PeerPort => $self->{port},
            Proto => 'tcp', Timeout => $self->{timeout},
        );
    }
    unless ($sock) {
        $self->{error} = "cannot connect to $self->{host}:$self->{port}: $!";
        return $self;
    }
    binmode $sock;
    $sock->autoflush(1);
    if ($o{ssl}) {
        # TLS (wss): a throw-away client, the server's certificate is not
        # verified.  The socket is non-blocking after the TLS handshake, so
        # that a partial record never blocks a read past its deadline.
        require IO::Socket::SSL;
        my $ok = IO::Socket::SSL->start_SSL($sock,
            SSL_verify_mode => IO::Socket::SSL::SSL_VERIFY_NONE(),
            SSL_hostname    => ($self->{host} =~ /^[\d.]+$|:/ ? '' : $self->{host}),
            Timeout         => $self->{timeout},
            %{ $o{ssl_opts} || {} },
        );
        unless ($ok) {
            $self->{error} = "TLS handshake with $self->{host}:$self->{port} failed: "
                           . ($IO::Socket::SSL::SSL_ERROR || $!);
            CORE::close($sock);
            return $self;
        }
        $sock->blocking(0);
        $self->{ssl} = 1;
    }
    $self->{sock} = $sock;
    $self->{sel}  = IO::Select->new($sock);

    my $req;
    if (defined $o{raw_request}) {
        $req = $o{raw_request};
        ($self->{key}) = $req =~ /^Sec-WebSocket-Key:[ \t]*(\S+)/mi;
    } else {
        my $key = defined $o{key} ? $o{key} : encode_base64(_random_bytes(16), '');
        $self->{key} = $key;
        my @h = (
            [ Host                    => "$self->{host}:$self->{port}" ],
            [ Upgrade                 => 'websocket' ],
            [ Connection              => 'Upgrade' ],
            [ 'Sec-WebSocket-Key'     => $key ],
            [ 'Sec-WebSocket-Version' => '13' ],
        );
        my $extra = $o{headers} || {};
        my @extra = ref $extra eq 'ARRAY'
            ? map { [ $extra->[2 * $_], $extra->[2 * $_ + 1] ] } 0 .. $#$extra / 2
            : map { [ $_, $extra->{$_} ] } sort keys %$extra;
        for my $e (@extra) {
            my ($n, $v) = @$e;
            my ($slot) = grep { lc $_->[0] eq lc $n } @h;
            if ($slot) {
                if (defined $v) { $slot->[1] = $v } else { $slot->[2] = 'deleted' }
            } elsif (defined $v) {
                push @h, [ $n, $v ];
            }
        }
        # the key actually sent (a test may override or delete it)
        my ($kslot) = grep { lc $_->[0] eq 'sec-websocket-key' && !$_->[2] } @h;
        $self->{key} = $kslot ? $kslot->[1] : undef;
        my $method = defined $o{method} ? $o{method} : 'GET';
        $req = "$method $self->{path} HTTP/1.1\r\n"
             . join('', map { "$_->[0]: $_->[1]\r\n" } grep { !$_->[2] } @h)
             . "\r\n";
    }
    $self->{request} = $req;
    unless ($self->_write_all($req, $deadline)) {
        $self->{error} ||= 'cannot send the handshake request';
        return $self;
    }

    # response header
    my $hend;
    while (($hend = index($self->{buf}, "\r\n\r\n")) < 0) {
        last unless $self->_fill($deadline);
    }
    if ($hend < 0) {
        $self->{error} = $self->{eof}
            ? 'connection closed before the handshake response'
            : 'timeout waiting for the handshake response';
        $self->{raw_response} = $self->{buf};
        return $self;
    }
    my $head = substr($self->{buf}, 0, $hend + 4, '');
    $self->{raw_response} = $head;
    my @lines = split /\r\n/, $head;
    my $sl = shift @lines;
    if ($sl =~ m{^HTTP/\d\.\d\s+(\d{3})(?:\s+(.*))?$}) {
        $self->{status} = $1;
        $self->{reason} = defined $2 ? $2 : '';
    } else {
        $self->{error} = "bad status line: $sl";
        return $self;
    }
    for my $l (@lines) {
        next unless $l =~ /^([^:]+?)\s*:\s*(.*?)\s*$/;
        push @{ $self->{header_list} }, [ $1, $2 ];
        my $k = lc $1;
        $self->{headers}{$k} = defined $self->{headers}{$k}
            ? "$self->{headers}{$k}, $2" : $2;
    }

    if ($self->{status} != 101) {
        $self->_read_error_body($deadline);
        $self->{error} = "handshake failed: status $self->{status}";
        return $self;
    }

    my @problems;
    my $accept = $self->{headers}{'sec-websocket-accept'};
    if (!defined $self->{key}) {
        push @problems, 'no Sec-WebSocket-Key was sent, cannot verify the accept value';
    } elsif (!defined $accept) {
        push @problems, 'no Sec-WebSocket-Accept header';
    } elsif ($accept ne $self->expected_accept($self->{key})) {
        push @problems, "bad Sec-WebSocket-Accept '$accept' (expected '"
                        . $self->expected_accept($self->{key}) . "')";
    } else {
        $self->{accept_ok} = 1;
    }
    my $up = $self->{headers}{upgrade};
    push @problems, 'Upgrade header is not "websocket"'
        unless defined $up && lc $up eq 'websocket';
    my $conn = $self->{headers}{connection};
    push @problems, 'Connection header does not contain "upgrade"'
        unless defined $conn && $conn =~ /\bupgrade\b/i;
    if (@problems) {
        $self->{error} = join '; ', @problems;
        return $self;
    }
    $self->{ok} = 1;
    return $self;
}

# same as connect(raw_request => $bytes, ...)
sub handshake_raw {
    my ($class, %o) = @_;
    $o{raw_request} = delete $o{request} if exists $o{request};
    return $class->connect(%o);
}

sub _read_error_body {
    my ($self, $deadline) = @_;
    my $h = $self->{headers};
    if (defined $h->{'content-length'} && $h->{'content-length'} =~ /^(\d+)/) {
        my $len = $1;
        while (length($self->{buf}) < $len) {
            last unless $self->_fill($deadline);
        }
        $self->{body} = substr($self->{buf}, 0, $len, '');
        return;
    }
    if (defined $h->{'transfer-encoding'} && $h->{'transfer-encoding'} =~ /chunked/i) {
        my $body = '';
        while (1) {
            my $le = index($self->{buf}, "\r\n");
            if ($le < 0) { last unless $self->_fill($deadline); next }
            my ($size) = substr($self->{buf}, 0, $le) =~ /^([0-9a-fA-F]+)/;
            last unless defined $size;
            $size = hex $size;
            if ($size == 0) { $self->{buf} = ''; last }
            if (length($self->{buf}) < $le + 2 + $size + 2) {
                last unless $self->_fill($deadline);
                next;
            }
            $body .= substr($self->{buf}, $le + 2, $size);
            substr($self->{buf}, 0, $le + 2 + $size + 2, '');
        }
        $self->{body} = $body;
        return;
    }
    # no framing: whatever arrives until EOF or a short quiet period
    my $quiet = Time::HiRes::time() + 0.3;
    $quiet = $deadline if $deadline < $quiet;
    1 while $self->_fill($quiet);
    $self->{body} = $self->{buf};
    $self->{buf} = '';
}

# ---------------------------------------------------------------------------
# accessors

sub ok           { $_[0]{ok} }
sub status       { $_[0]{status} }
sub headers      { $_[0]{headers} }
sub header       { my ($s, $n) = @_; $s->{headers}{lc $n} }
sub header_list  { $_[0]{header_list} }
sub body         { $_[0]{body} }
sub error        { $_[0]{error} }
sub eof          { $_[0]{eof} }
sub timed_out    { $_[0]{timed_out} }
sub key          { $_[0]{key} }
sub accept_ok    { $_[0]{accept_ok} }
sub raw_response { $_[0]{raw_response} }
sub sock         { $_[0]{sock} }
sub ssl          { $_[0]{ssl} }
sub skipped      { $_[0]{skipped} }
sub skipped_frames { $_[0]{skipped_frames} }
sub close_code   { $_[0]{close_code} }
sub close_reason { $_[0]{close_reason} }
sub pings_answered { $_[0]{pings_answered} || 0 }

sub clear_skipped {
    my $self = shift;
    @{ $self->{skipped} } = ();
    @{ $self->{skipped_frames} } = ();
}

sub auto_pong {
    my $self = shift;
    $self->{auto_pong} = shift ? 1 : 0 if @_;
    return $self->{auto_pong};
}

# ---------------------------------------------------------------------------
# low level I/O

# read more bytes into buf; 1 if some were read, 0 on timeout or EOF
sub _fill {
    my ($self, $deadline) = @_;
    return 0 if $self->{eof} || !$self->{sock};
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) { $self->{timed_out} = 1; return 0 }
        # TLS: bytes already decrypted are not seen by select()
        my @r = $self->{ssl} && $self->{sock}->pending
              ? (1) : $self->{sel}->can_read($left);
        next unless @r;
        my $n = sysread($self->{sock}, my $chunk, 65536);
        if (!defined $n) {
            next if $!{EINTR};
            next if $!{EAGAIN} && (!$self->{ssl} || $self->_ssl_want);
            $self->{eof} = 1;
            $self->{read_error} = "$!";
            return 0;
        }
        if ($n == 0) { $self->{eof} = 1; return 0 }
        $self->{buf} .= $chunk;
        return 1;
    }
}

sub _write_all {
    my ($self, $data, $deadline) = @_;
    return 0 unless $self->{sock};
    $deadline ||= Time::HiRes::time() + $self->{timeout};
    local $SIG{PIPE} = 'IGNORE';
    while (length $data) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0 || !$self->{sel}->can_write($left)) {
            $self->{error} = 'timeout while sending';
            return 0;
        }
        my $n = syswrite($self->{sock}, $data);
        if (!defined $n) {
            next if $!{EINTR};
            next if $!{EAGAIN} && (!$self->{ssl} || $self->_ssl_want);
            $self->{error} = "send failed: $!";
            $self->{write_error} = "$!";
            return 0;
        }
        substr($data, 0, $n, '');
    }
    return 1;
}

# TLS: the last read/write only has to be retried (SSL_WANT_READ/WRITE)
sub _ssl_want {
    my $e = $IO::Socket::SSL::SSL_ERROR;
    return 0 unless defined $e && length $e;
    no warnings 'numeric';
    return $e == IO::Socket::SSL::SSL_WANT_READ()
        || $e == IO::Socket::SSL::SSL_WANT_WRITE() ? 1 : 0;
}

sub _timeout_arg {
    my $self = shift;
    return $self->{timeout} unless @_;
    return $_[0] if @_ == 1;
    my %o = @_;
    return defined $o{timeout} ? $o{timeout} : $self->{timeout};
}

# ---------------------------------------------------------------------------
# sending

sub _bytes {
    my $s = shift;
    $s = '' unless defined $s;
    if (utf8::is_utf8($s)) {
        utf8::encode($s);
    }
    return $s;
}

# Build one frame.  Options: opcode (number or name), payload, fin (1),
# mask (1), mask_key (4 bytes), rsv (0..7), len_form ('auto'|7|16|64),
# declared_len (length to put in the header instead of the real one).
sub build_frame {
    my ($self, %o) = @_;
    my $op = defined $o{opcode} ? $o{opcode} : 1;
    $op = $OPCODE{$op} if exists $OPCODE{$op};
    croak "bad opcode '$op'" unless $op =~ /^\d+$/ && $op < 16;
    my $payload = _bytes($o{payload});
    my $fin  = defined $o{fin}  ? ($o{fin} ? 1 : 0) : 1;
    my $mask = defined $o{mask} ? ($o{mask} ? 1 : 0) : 1;
    my $rsv  = $o{rsv} || 0;
    my $len  = defined $o{declared_len} ? $o{declared_len} : length $payload;
    my $form = defined $o{len_form} ? $o{len_form} : 'auto';
    if ($form eq 'auto') {
        $form = $len < 126 ? 7 : $len < 65536 ? 16 : 64;
    }
    my $frame = chr(($fin << 7) | (($rsv & 7) << 4) | $op);
    my $mbit = $mask << 7;
    if ($form == 7) {
        croak "len_form 7 cannot encode length $len" if $len > 125;
        $frame .= chr($mbit | $len);
    } elsif ($form == 16) {
        croak "len_form 16 cannot encode length $len" if $len > 65535;
        $frame .= chr($mbit | 126) . pack('n', $len);
    } elsif ($form == 64) {
        $frame .= chr($mbit | 127) . pack('Q>', $len);
    } else {
        croak "bad len_form '$form'";
    }
    if ($mask) {
        my $key = defined $o{mask_key} ? $o{mask_key} : _random_bytes(4);
        croak "mask_key must be 4 bytes" unless length $key == 4;
        $frame .= $key . _xor_mask($payload, $key);
    } else {
        $frame .= $payload;
    }
    return $frame;
}

sub _xor_mask {
    my ($data, $key) = @_;
    return '' unless length $data;
    my $m = $key x (int(length($data) / 4) + 1);
    return $data ^ substr($m, 0, length $data);
}

sub send_raw {
    my ($self, $bytes) = @_;
    return $self->_write_all($bytes);
}

sub send_frame {
    my ($self, %o) = @_;
    my $op = defined $o{opcode} ? $o{opcode} : 1;
    $op = $OPCODE{$op} if exists $OPCODE{$op};
    $self->{close_sent} = 1 if $op == 8;
    return $self->_write_all($self->build_frame(%o));
}

sub send_text   { my ($s, $t, %o) = @_; $s->send_frame(%o, opcode => 1, payload => $t) }
sub send_binary { my ($s, $b, %o) = @_; $s->send_frame(%o, opcode => 2, payload => $b) }
sub send_ping   { my ($s, $p, %o) = @_; $s->send_frame(%o, opcode => 9, payload => defined $p ? $p : '') }
sub send_pong   { my ($s, $p, %o) = @_; $s->send_frame(%o, opcode => 10, payload => defined $p ? $p : '') }

sub send_json {
    my ($self, $data) = @_;
    return $self->send_frame(opcode => 1, payload => $JSON->encode($data));
}

sub send_close {
    my ($self, %o) = @_;
    my $payload = '';
    if (defined $o{code}) {
        $payload = pack('n', $o{code}) . _bytes(defined $o{reason} ? $o{reason} : '');
    }
    return $self->send_frame(opcode => 8, payload => $payload,
                             map { exists $o{$_} ? ($_ => $o{$_}) : () } qw(mask rsv fin));
}

# send_fragmented([$p1, $p2, ...], opcode => 'text', ping_between => 1,
#                 ping_payload => '...', mask => 1)
sub send_fragmented {
    my ($self, $parts, %o) = @_;
    croak "send_fragmented needs an array ref" unless ref $parts eq 'ARRAY' && @$parts;
    my $op = defined $o{opcode} ? $o{opcode} : 1;
    my $data = '';
    for my $i (0 .. $#$parts) {
        $data .= $self->build_frame(
            opcode  => $i == 0 ? $op : 0,
            payload => $parts->[$i],
            fin     => $i == $#$parts ? 1 : 0,
            (exists $o{mask} ? (mask => $o{mask}) : ()),
        );
        if ($o{ping_between} && $i < $#$parts) {
            $data .= $self->build_frame(
                opcode => 9,
                payload => defined $o{ping_payload} ? $o{ping_payload} : "ping$i",
                (exists $o{mask} ? (mask => $o{mask}) : ()),
            );
        }
    }
    return $self->_write_all($data);
}

# ---------------------------------------------------------------------------
# receiving

# try to cut one frame off the buffer; undef if incomplete
sub _parse_frame {
    my $self = shift;
    my $buf = \$self->{buf};
    return undef if length $$buf < 2;
    my ($b0, $b1) = unpack 'CC', $$buf;
    my $masked = $b1 >> 7;
    my $len = $b1 & 0x7f;
    my $off = 2;
    my $form = 7;
    if ($len == 126) {
        return undef if length $$buf < 4;
        $len = unpack 'n', substr($$buf, 2, 2);
        $off = 4;
        $form = 16;
    } elsif ($len == 127) {
        return undef if length $$buf < 10;
        $len = unpack 'Q>', substr($$buf, 2, 8);
        $off = 10;
        $form = 64;
    }
    my $key;
    if ($masked) {
        return undef if length $$buf < $off + 4;
        $key = substr($$buf, $off, 4);
        $off += 4;
    }
    return undef if length $$buf < $off + $len;
    my $payload = substr($$buf, $off, $len);
    substr($$buf, 0, $off + $len, '');
    $payload = _xor_mask($payload, $key) if $masked;

    my $f = {
        fin      => $b0 >> 7,
        rsv      => ($b0 >> 4) & 7,
        opcode   => $b0 & 0x0f,
        masked   => $masked,
        len_form => $form,
        length   => $len,
        payload  => $payload,
    };
    $f->{type} = $OPNAME{ $f->{opcode} } || 'unknown';
    my @err;
    push @err, 'masked frame from server' if $masked;
    push @err, "RSV bits set ($f->{rsv})" if $f->{rsv};
    push @err, "unknown opcode $f->{opcode}" unless exists $OPNAME{ $f->{opcode} };
    if ($f->{opcode} >= 8) {
        push @err, 'control frame payload > 125 bytes' if $len > 125;
        push @err, 'fragmented control frame' unless $f->{fin};
    }
    push @err, 'non-minimal length encoding'
        if ($form == 16 && $len < 126) || ($form == 64 && $len < 65536);
    if ($f->{opcode} == 8) {
        if ($len >= 2) {
            $f->{close_code} = unpack 'n', $payload;
            $f->{close_reason} = substr($payload, 2);
        } elsif ($len == 1) {
            push @err, 'close frame with a 1-byte payload';
        }
    }
    $f->{errors} = \@err if @err;
    if ($masked) {
        croak "Test::Chat::WS: server sent a MASKED frame (opcode $f->{opcode}, "
            . "payload '" . substr($payload, 0, 60) . "'): RFC 6455 5.1 forbids this";
    }
    return $f;
}

# recv_frame(timeout => 2) or recv_frame(2): next frame, or undef on
# timeout (->timed_out) or EOF (->eof)
sub recv_frame {
    my $self = shift;
    my $timeout = $self->_timeout_arg(@_);
    my $deadline = Time::HiRes::time() + $timeout;
    $self->{timed_out} = 0;
    while (1) {
        my $f = $self->_parse_frame;
        if ($f) {
            if ($f->{opcode} == 8) {
                $self->{close_received} = 1;
                $self->{close_code} = $f->{close_code};
                $self->{close_reason} = $f->{close_reason};
            }
            if ($f->{opcode} == 9 && $self->{auto_pong}) {
                $self->send_pong($f->{payload});
                $self->{pings_answered}++;
                next;
            }
            return $f;
        }
        return undef unless $self->_fill($deadline);
    }
}

# Next complete data message (fragments joined).  Ping/pong frames met on
# the way go to ->skipped_frames.  A close frame is returned as is.
sub recv_message {
    my $self = shift;
    my $timeout = $self->_timeout_arg(@_);
    my $deadline = Time::HiRes::time() + $timeout;
    my $msg;
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        $left = 0.001 if $left <= 0;
        my $f = $self->recv_frame(timeout => $left);
        return undef unless $f;
        if ($f->{opcode} == 9 || $f->{opcode} == 10) {
            push @{ $self->{skipped_frames} }, $f;
            next;
        }
        return $f if $f->{opcode} == 8;
        if (!$msg) {
            if ($f->{opcode} == 0) {
                $self->{error} = 'continuation frame without a start frame';
                push @{ $self->{skipped_frames} }, $f;
                next;
            }
            $msg = { %$f, fragments => 1 };
        } else {
            if ($f->{opcode} != 0) {
                $self->{error} = "new data frame (opcode $f->{opcode}) inside a fragmented message";
            }
            $msg->{payload} .= $f->{payload};
            $msg->{fragments}++;
            $msg->{fin} = $f->{fin};
            push @{ $msg->{errors} }, @{ $f->{errors} } if $f->{errors};
        }
        if ($msg->{fin}) {
            $msg->{length} = length $msg->{payload};
            if ($msg->{opcode} == 1) {
                my $t = $msg->{payload};
                $msg->{text} = utf8::decode($t) ? $t : undef;
            }
            return $msg;
        }
    }
}

# Next text message decoded as JSON (hashref/arrayref), or undef on
# timeout, EOF, close frame (see ->close_code) or bad JSON (see ->error).
sub recv_json {
    my $self = shift;
    my $msg = $self->recv_message(@_);
    return undef unless $msg;
    if ($msg->{opcode} == 8) {
        $self->{error} = 'got a close frame'
            . (defined $msg->{close_code} ? " ($msg->{close_code})" : '');
        return undef;
    }
    if ($msg->{opcode} != 1) {
        $self->{error} = "expected a text message, got opcode $msg->{opcode}";
        push @{ $self->{skipped_frames} }, $msg;
        return undef;
    }
    my $data = eval { $JSON->decode($msg->{payload}) };
    unless (defined $data) {
        $self->{error} = "invalid JSON '$msg->{payload}': $@";
        require Test::More;
        Test::More::diag("Test::Chat::WS: $self->{error}");
        return undef;
    }
    $self->{last_raw} = $msg->{payload};
    return $data;
}

# recv_until(sub { $_[0]{type} eq 'joined' }, $timeout): first JSON message
# accepted by the predicate; others are pushed to ->skipped.
sub recv_until {
    my ($self, $pred, @t) = @_;
    my $timeout = $self->_timeout_arg(@t);
    my $deadline = Time::HiRes::time() + $timeout;
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) { $self->{timed_out} = 1; return undef }
        my $m = $self->recv_json(timeout => $left);
        return undef unless defined $m;
        local $_ = $m;
        return $m if $pred->($m);
        push @{ $self->{skipped} }, $m;
    }
}

# Collect all JSON messages arriving within $timeout (e.g. to check that
# nothing else came).  Returns a list.
sub drain_json {
    my $self = shift;
    my $timeout = $self->_timeout_arg(@_);
    my $deadline = Time::HiRes::time() + $timeout;
    my @out;
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        last if $left <= 0;
        my $m = $self->recv_json(timeout => $left);
        last unless defined $m;
        push @out, $m;
    }
    return @out;
}

# Wait for the server's close frame (other frames go to ->skipped_frames),
# answer it (unless reply => 0 or we already sent one) and wait for the
# TCP close.  Returns ($code, $eof, $reason); in scalar context $code.
sub expect_close {
    my $self = shift;
    my %o = @_ == 1 ? (timeout => $_[0]) : @_;
    my $timeout = defined $o{timeout} ? $o{timeout} : $self->{timeout};
    my $reply = defined $o{reply} ? $o{reply} : 1;
    my $deadline = Time::HiRes::time() + $timeout;
    my $got;
    if ($self->{close_received}) {
        $got = 1;
    } else {
        while (1) {
            my $left = $deadline - Time::HiRes::time();
            last if $left <= 0;
            my $f = $self->recv_frame(timeout => $left);
            last unless $f;
            if ($f->{opcode} == 8) { $got = 1; last }
            push @{ $self->{skipped_frames} }, $f;
        }
    }
    my ($code, $reason) = $got ? ($self->{close_code}, $self->{close_reason}) : ();
    if ($got && $reply && !$self->{close_sent} && !$self->{eof}) {
        $self->send_close(defined $code ? (code => $code) : ());
    }
    my $eof = $self->wait_eof(timeout => $deadline - Time::HiRes::time());
    return wantarray ? ($code, $eof, $reason) : $code;
}

# Client-initiated close: send a close frame, then wait for the server's
# close frame and the TCP close.  Returns ($server_code, $eof, $reason).
sub close {
    my ($self, %o) = @_;
    my $code = exists $o{code} ? $o{code} : 1000;
    my $timeout = defined $o{timeout} ? $o{timeout} : $self->{timeout};
    unless ($self->{sock}) {
        return wantarray ? (undef, 1, undef) : undef;
    }
    if (!$self->{close_sent} && !$self->{eof}) {
        $self->send_close(defined $code ? (code => $code, reason => $o{reason}) : ());
    }
    return $self->expect_close(timeout => $timeout, reply => 0);
}

# Wait until the server closes the TCP connection; frames that arrive are
# kept in ->skipped_frames.  Returns 1 on EOF, 0 on timeout.
sub wait_eof {
    my $self = shift;
    my $timeout = $self->_timeout_arg(@_);
    $timeout = 0.001 if $timeout <= 0;
    my $deadline = Time::HiRes::time() + $timeout;
    while (!$self->{eof}) {
        my $f = eval { $self->_parse_frame };
        if ($f) { push @{ $self->{skipped_frames} }, $f; next }
        last unless $self->_fill($deadline);
    }
    if ($self->{eof}) {
        # frames still in the buffer
        while (my $f = eval { $self->_parse_frame }) {
            push @{ $self->{skipped_frames} }, $f;
        }
    }
    return $self->{eof} ? 1 : 0;
}

# Drop the TCP connection without a close handshake.
sub disconnect {
    my $self = shift;
    if ($self->{sock}) {
        _close_sock($self);
        delete $self->{sock};
    }
}

sub _close_sock {
    my $self = shift;
    if ($self->{ssl}) {
        # no TLS close_notify: the connection just goes away
        $self->{sock}->close(SSL_no_shutdown => 1);
    } else {
        CORE::close($self->{sock});
    }
}

sub DESTROY {
    my $self = shift;
    _close_sock($self) if $self->{sock};
}

1;
