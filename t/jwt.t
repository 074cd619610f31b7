# Token authentication (SPEC §10): chat_jwt and chat_jwt_key.  Tokens are
# minted here: HMAC with Digest::SHA, RSA and ECDSA with the openssl CLI
# (the ECDSA DER signature turned into JOSE's r||s).  Valid tokens of each
# algorithm family, then every way a token is refused (401 before the
# upgrade, an info line saying why, never the token), the rooms claim,
# expiry of an open connection and its refresh, nginx -t on bad keys, and
# key rotation by reload.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp ();
use Digest::SHA ();
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use Test::Chat::Nginx;
use Test::Chat::Util qw(now req);

my $openssl = (grep { -x "$_/openssl" } split(/:/, $ENV{PATH} || ""), "/usr/bin")[0];
$openssl = -x "$openssl/openssl" ? "$openssl/openssl" : "";
chomp $openssl;
plan skip_all => 'openssl CLI not found (./scripts/deps.sh --test)'
    unless $openssl;

my $dir = File::Temp::tempdir(CLEANUP => 1);
my $JSON = JSON::PP->new->utf8->canonical;

sub spew {
    my ($f, $c) = @_;
    open my $fh, '>', $f or die "$f: $!";
    binmode $fh;
    print $fh $c;
    close $fh;
}

sub slurp {
    my $f = shift;
    open my $fh, '<', $f or die "$f: $!";
    binmode $fh;
    local $/;
    my $c = <$fh>;
    close $fh;
    return $c;
}

sub ossl {
    my $cmd = shift;
    system("$openssl $cmd >/dev/null 2>&1") == 0 or die "openssl $cmd failed";
}

# keys: HMAC secrets, RSA 2048, EC P-256 and P-384
spew("$dir/hs.key", "hmac secret of the test\n");
spew("$dir/hs-new.key", "the rotated secret\n");
ossl("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out $dir/rsa.pem");
ossl("pkey -in $dir/rsa.pem -pubout -out $dir/rsa.pub");
ossl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $dir/ec256.pem");
ossl("pkey -in $dir/ec256.pem -pubout -out $dir/ec256.pub");
ossl("genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out $dir/ec384.pem");
ossl("pkey -in $dir/ec384.pem -pubout -out $dir/ec384.pub");
spew("$dir/garbage.pub", "-----BEGIN PUBLIC KEY-----\nnot base64 at all\n"
                         . "-----END PUBLIC KEY-----\n");

my $secret = "hmac secret of the test";   # the file's trailing newline ignored

# DER ECDSA-Sig-Value -> r||s of n bytes each
sub der_to_jose {
    my ($der, $n) = @_;
    my @b = unpack 'C*', $der;
    my $i = 0;
    die 'not a SEQUENCE' unless $b[$i++] == 0x30;
    my $len = $b[$i++];
    $i += ($len & 0x7f) if $len & 0x80;
    my @out;
    for (1 .. 2) {
        die 'not an INTEGER' unless $b[$i++] == 0x02;
        my $l = $b[$i++];
        my $v = pack 'C*', @b[$i .. $i + $l - 1];
        $i += $l;
        $v =~ s/^\x00+//;
        my $pad = $n - length $v;
        push @out, ("\x00" x ($pad > 0 ? $pad : 0)) . $v;
    }
    return join '', @out;
}

# sign($alg, $input, %o): the signature bytes; key => file or secret
sub sign {
    my ($alg, $input, %o) = @_;
    my ($fam, $bits) = $alg =~ /^([A-Z]+)(\d+)$/;
    if ($fam eq 'HS') {
        my $k = defined $o{key} ? $o{key} : $secret;
        no strict 'refs';
        return &{"Digest::SHA::hmac_sha$bits"}($input, $k);
    }
    my $key = $o{key} || ($fam eq 'RS' ? "$dir/rsa.pem" : "$dir/ec$bits.pem");
    spew("$dir/input", $input);
    my $sig = `$openssl dgst -sha$bits -sign $key $dir/input`;
    die "openssl dgst failed" if $? != 0;
    return $fam eq 'ES' ? der_to_jose($sig, $bits == 256 ? 32 : 48) : $sig;
}

# token(%o): alg (HS256), claims (merged over sub/exp), header, key, raw
# signature
sub token {
    my %o = @_;
    my $alg = $o{alg} || 'HS256';
    my %claims = (sub => 'ann', exp => time + 60, %{ $o{claims} || {} });
    delete $claims{$_} for grep { !defined $claims{$_} } keys %claims;
    my $h = $o{header} || { alg => $alg, typ => 'JWT' };
    my $input = encode_base64url($JSON->encode($h)) . '.'
              . encode_base64url($JSON->encode(\%claims));
    my $sig = exists $o{sig} ? $o{sig} : sign($alg, $input, key => $o{key});
    return "$input." . encode_base64url($sig);
}

my %loc = (
    hs256 => "$dir/hs.key",
    hs384 => "$dir/hs.key HS384",
    hs512 => "$dir/hs.key HS512",
    rs256 => "$dir/rsa.pub",
    rs384 => "$dir/rsa.pub RS384",
    rs512 => "$dir/rsa.pub RS512",
    es256 => "$dir/ec256.pub ES256",
    es384 => "$dir/ec384.pub",
);

sub server_conf {
    my $hs = shift || "$dir/hs.key";
    my $c = '';
    for my $l (sort keys %loc) {
        my $k = $l eq 'hs256' ? $hs : $loc{$l};
        $c .= "        location = /$l { chat chat; chat_jwt \$arg_token; "
            . "chat_jwt_key $k; }\n";
    }
    # chat_user as well: the token wins
    $c .= "        location = /both { chat chat; chat_user \$arg_user; "
        . "chat_jwt \$http_x_token; chat_jwt_key $dir/hs.key; }\n";
    # Authorization: Bearer
    $c .= "        location = /bearer { chat chat; "
        . "chat_jwt \$http_authorization; chat_jwt_key $dir/hs.key; }\n";
    return $c;
}

my $t = Test::Chat::Nginx->new(
    http      => 'chat_zone chat 1m;',
    server    => server_conf(),
    workers   => 1,
    log_level => 'info',
);

# connect: ($ws, $welcome) or ($ws) with ->status when refused
sub open_with {
    my ($loc, $tok, %o) = @_;
    my $ws = $t->ws(path => "/$loc" . (defined $tok ? "?token=$tok" : ''),
                    timeout => 3, auto_pong => 1, %o);
    return ($ws) unless $ws->ok;
    my $w = $ws->recv_json(3);
    return ($ws, $w);
}

# --- a valid token of each algorithm: 101, the user is sub -------------------
for my $l (sort keys %loc) {
    my $alg = uc $l;
    my ($ws, $w) = open_with($l, token(alg => $alg,
                                       claims => { sub => "u-$l" }));
    ok($ws->ok && $w && $w->{type} eq 'welcome' && $w->{user} eq "u-$l",
       "$alg: a valid token is accepted, user = sub")
        or diag(($ws->status || $ws->error || '') . ' ' . $JSON->encode($w || {}));
    $ws->close if $ws->ok;
}

# a token with nbf in the past, an exp as a real number: accepted
{
    my ($ws, $w) = open_with('hs256', token(claims => {
        nbf => time - 10, exp => time + 60.5, iat => time }));
    ok($ws->ok && $w && $w->{user} eq 'ann', 'nbf in the past, real exp: accepted');
    $ws->close if $ws->ok;
}

# the token wins over chat_user
{
    my ($ws, $w) = open_with('both?user=mallory', undef,
                             headers => { 'X-Token' => token(claims => { sub => 'bob' }) });
    ok($ws->ok && $w && $w->{user} eq 'bob', 'with chat_user too, the token\'s sub is the user')
        or diag($ws->status || $ws->error);
    $ws->close if $ws->ok;
}

# scripts/mint-token.sh mints tokens nginx takes
for my $c ([ 'hs256', "$dir/hs.key", 'HS256' ], [ 'rs384', "$dir/rsa.pem", 'RS384' ],
           [ 'es256', "$dir/ec256.pem", 'ES256' ], [ 'es384', "$dir/ec384.pem", 'ES384' ]) {
    my ($l, $key, $alg) = @$c;
    my $tok = `$FindBin::Bin/../scripts/mint-token.sh $key $alg minted 60 '["x"]'`;
    chomp $tok;
    my ($ws, $w) = open_with($l, $tok);
    ok($w && $w->{user} eq 'minted', "scripts/mint-token.sh: an $alg token is accepted")
        or diag($tok);
    $ws->close if $ws->ok;
}

# Authorization: Bearer TOKEN
{
    my ($ws, $w) = open_with('bearer', undef,
                             headers => { 'Authorization' => 'Bearer ' . token(claims => { sub => 'carl' }) });
    ok($ws->ok && $w && $w->{user} eq 'carl', 'chat_jwt $http_authorization: "Bearer TOKEN"')
        or diag($ws->status || $ws->error);
    $ws->close if $ws->ok;
}

# --- refusals: 401 and the reason at info level -----------------------------
my $hs_input = encode_base64url($JSON->encode({ alg => 'HS256', typ => 'JWT' }))
    . '.' . encode_base64url($JSON->encode({ sub => 'ann', exp => time + 60 }));
my $rs_pub = slurp("$dir/rsa.pub");
my $good = token();
# one character of the signature changed (not the last, whose low bits
# are padding: that spelling is refused as not canonical, below)
my $badsig = $good;
substr($badsig, -10, 1) = substr($badsig, -10, 1) eq 'A' ? 'B' : 'A';
# the same signature spelled with its unused low bits set
my $noncanon = $good;
{
    my $last = substr($noncanon, -1);
    my $alpha = join '', 'A' .. 'Z', 'a' .. 'z', 0 .. 9, '-', '_';
    my $v = index($alpha, $last);
    substr($noncanon, -1) = substr($alpha, $v | 3, 1);   # 43 chars: 2 unused bits
}

my @refused = (
    [ 'hs256', token(claims => { exp => time - 60 }), qr/token expired/, 'expired' ],
    [ 'hs256', token(claims => { nbf => time + 60 }), qr/not yet valid/, 'not yet valid (nbf)' ],
    [ 'hs256', token(claims => { exp => undef }), qr/no "exp" claim/, 'no exp' ],
    [ 'hs256', token(claims => { exp => 'tomorrow' }), qr/"exp" is not a number/, 'exp a string' ],
    [ 'hs256', $badsig, qr/bad signature|malformed signature/, 'bad signature' ],
    [ 'hs256', token(key => 'another secret'), qr/bad signature/, 'signed with another secret' ],
    [ 'hs256', $noncanon, qr/malformed signature/, 'a signature not in canonical base64url' ],
    [ 'hs256', "$good=x", qr/malformed signature/, 'a signature with "=" and more after it' ],
    [ 'hs256', token(alg => 'HS384'), qr/algorithm is not the configured one/,
      'wrong algorithm (HS384 where HS256 is configured)' ],
    [ 'rs256', token(alg => 'RS512'), qr/algorithm is not the configured one/,
      'wrong algorithm (RS512 where RS256 is configured)' ],
    [ 'hs256', token(header => { alg => 'none' }, sig => ''),
      qr/algorithm is not the configured one|malformed signature/, 'alg none, no signature' ],
    [ 'hs256', token(header => { alg => 'none' }), qr/algorithm is not the configured one/,
      'alg none, with a signature' ],
    [ 'rs256', token(alg => 'HS256', key => $rs_pub), qr/algorithm is not the configured one/,
      'HS/RS confusion: HS256 signed with the RSA public key' ],
    [ 'es256', token(alg => 'ES256', key => "$dir/ec384.pem", header => { alg => 'ES256' }),
      qr/bad signature/, 'ES256 signed with another curve\'s key' ],
    [ 'hs256', token(claims => { sub => undef }), qr/no "sub" claim/, 'no sub' ],
    [ 'hs256', token(claims => { sub => '' }), qr/no "sub" claim/, 'empty sub' ],
    [ 'hs256', token(claims => { sub => 42 }), qr/no "sub" claim/, 'sub a number' ],
    [ 'hs256', token(claims => { rooms => 'lobby' }), qr/"rooms" is not an array/, 'rooms not an array' ],
    [ 'hs256', 'garbage', qr/not a compact JWS/, 'garbage' ],
    [ 'hs256', 'a.b.c', qr/malformed header/, 'three parts of garbage' ],
    [ 'hs256', encode_base64url('{"alg":"HS256"}') . '.' . encode_base64url('[1]') . '.'
               . encode_base64url(sign('HS256', encode_base64url('{"alg":"HS256"}') . '.'
                                                . encode_base64url('[1]'))),
      qr/malformed claims/, 'claims not an object (signed)' ],
    [ 'hs256', encode_base64url('{"alg":"HS256","alg":"none"}') . '.x.y',
      qr/malformed header/, 'duplicate alg in the header' ],
    [ 'hs256', undef, qr/no token/, 'no token at all' ],
);

for my $r (@refused) {
    my ($l, $tok, $why, $name) = @$r;
    my $mark = $t->log_mark;
    my ($ws) = open_with($l, $tok);
    is($ws->ok ? 101 : $ws->status, 401, "$name: 401");
    my $line = $t->wait_for_log(qr/chat: token refused: .*/, since => $mark, timeout => 2);
    ok($line && $t->error_log(since => $mark) =~ /\[info\].*chat: token refused: .*$why/,
       "$name: the log says why")
        or diag($t->error_log(since => $mark));
    $ws->close if $ws->ok;
}

# the token itself is never logged
{
    my $log = $t->error_log;
    my @leaked = grep { defined $_->[1] && length $_->[1] > 10
                        && index($log, $_->[1]) >= 0 } @refused;
    is(scalar @leaked, 0, 'no refused token appears in the error log');
}

# --- the rooms claim ---------------------------------------------------------
{
    my ($ws, $w) = open_with('hs256', token(claims => {
        sub => 'roomy', rooms => [ 'lobby', 'team-*' ] }));
  SKIP: {
        skip 'no connection', 6 unless $w;
        my $r = req($ws, { type => 'join', room => 'lobby' });
        is($r && $r->{type}, 'joined', 'rooms: an exact name may be joined');
        $r = req($ws, { type => 'join', room => 'team-red' });
        is($r && $r->{type}, 'joined', 'rooms: a name under a prefix may be joined');
        $r = req($ws, { type => 'join', room => 'team-' });
        is($r && $r->{type}, 'joined', 'rooms: the prefix itself is covered');
        $r = req($ws, { type => 'join', room => 'lobby2', ref => 'j1' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'forbidden' && $r->{ref} eq 'j1',
           'rooms: another name is forbidden (with its ref)')
            or diag($JSON->encode($r || {}));
        $r = req($ws, { type => 'join', room => 'team' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'forbidden',
           'rooms: a prefix of the prefix is forbidden');
        $r = req($ws, { type => 'send', room => 'lobby2', content => 'x' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'not_member',
           'rooms: not a member of the forbidden room afterwards');
    }
    $ws->close if $ws->ok;
}

# without rooms every room is allowed
{
    my ($ws, $w) = open_with('hs256', token());
    my $r = $w ? req($ws, { type => 'join', room => 'anything' }) : undef;
    is($r && $r->{type}, 'joined', 'no rooms claim: any room');
    $ws->close if $ws->ok;
}

# --- expiry of an open connection --------------------------------------------
{
    my $mark = $t->log_mark;
    my $exp = time + 2;
    my $t0 = now();
    my ($ws, $w) = open_with('hs256', token(claims => { sub => 'short', exp => $exp }));
  SKIP: {
        skip 'no connection', 4 unless $w;
        my $r = req($ws, { type => 'join', room => 'exp' });
        is($r && $r->{type}, 'joined', 'expiring token: joined');
        my ($code, $eof, $reason) = $ws->expect_close(timeout => 6);
        my $el = now() - $t0;
        is($code, 1008, 'exp passed: closed with 1008');
        is($reason, 'token expired', 'reason "token expired"');
        ok($eof && $el < 4.5, 'closed at exp (not at the next ping)')
            or diag(sprintf 'eof %s after %.2f s', $eof, $el);
    }
    ok($t->wait_for_log(qr/\[info\].*chat: token expired/, since => $mark, timeout => 2),
       'expiry logged at info');
}

# --- a refresh keeps it open --------------------------------------------------
{
    my $exp = time + 2;
    my ($ws, $w) = open_with('hs256', token(claims => { sub => 'fresh', exp => $exp,
                                                       rooms => [ 'a' ] }));
  SKIP: {
        skip 'no connection', 9 unless $w;
        my $r = req($ws, { type => 'refresh', token => token(claims => {
            sub => 'other', exp => time + 60 }), ref => 'x' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'forbidden' && $r->{ref} eq 'x',
           'refresh for another sub: forbidden')
            or diag($JSON->encode($r || {}));
        $r = req($ws, { type => 'refresh', token => $badsig });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'forbidden',
           'refresh with a bad token: forbidden');
        $r = req($ws, { type => 'refresh' });
        ok($r && $r->{type} eq 'error' && $r->{code} eq 'bad_request',
           'refresh without a token: bad_request');
        my $new_exp = time + 60;
        $r = req($ws, { type => 'refresh', token => token(claims => {
            sub => 'fresh', exp => $new_exp, rooms => [ 'b' ] }) });
        is_deeply($r, { type => 'refreshed', exp => $new_exp * 1000 },
                  'refresh: {"type":"refreshed","exp":MS}');
        my $f = $ws->recv_frame(4);
        ok(!$f && !$ws->eof, 'refreshed: still open past the old exp')
            or diag($f ? "frame $f->{type} " . ($f->{close_code} || '') : 'eof');
        $r = req($ws, { type => 'join', room => 'b' });
        is($r && $r->{type}, 'joined', 'the new token\'s rooms apply');
        $r = req($ws, { type => 'join', room => 'a' });
        is($r && $r->{code}, 'forbidden', 'the old token\'s rooms no longer');

        # a refresh to an earlier exp brings the close forward
        $r = req($ws, { type => 'refresh', token => token(claims => {
            sub => 'fresh', exp => time + 1 }) });
        is($r && $r->{type}, 'refreshed', 'refresh to a sooner exp');
        my ($code) = $ws->expect_close(timeout => 4);
        is($code, 1008, 'closed at the sooner exp');
    }
}

# a refresh on an endpoint without chat_jwt
{
    my $t2 = Test::Chat::Nginx->new(
        http => 'chat_zone chat 1m;',
        server => 'location = /chat { chat chat; chat_user $arg_user; }',
    );
    my $ws = $t2->ws(path => '/chat?user=x');
    $ws->recv_json(3);
    my $r = req($ws, { type => 'refresh', token => $good });
    ok($r && $r->{type} eq 'error' && $r->{code} eq 'bad_request',
       'refresh without chat_jwt: bad_request');
    $ws->close;
    undef $t2;
}

# --- nginx -t: keys are read at configuration time ---------------------------
sub conf_t {
    my ($key) = @_;
    return Test::Chat::Nginx->nginx_t(
        http => 'chat_zone chat 1m;',
        server => "location = /c {\n chat chat;\n chat_jwt \$arg_token;\n"
                . " chat_jwt_key $key;\n}",
    );
}

{
    my @cases = (
        [ "$dir/missing.key", qr/chat_jwt_key: cannot open ".*missing\.key"/, 'a missing key file' ],
        [ "$dir/garbage.pub RS256", qr/is not a PEM public key, which RS256 needs/, 'a malformed PEM key' ],
        [ "$dir/rsa.pub HS256", qr/holds a PEM key, which HS256 would use as a shared secret/,
          'a public key as an HMAC secret' ],
        [ "$dir/ec256.pub RS256", qr/is not an RSA public key/, 'an EC key for RS256' ],
        [ "$dir/ec256.pub ES384", qr/not an EC public key on curve secp384r1/, 'a P-256 key for ES384' ],
        [ "$dir/hs.key PS256", qr/unknown chat_jwt_key algorithm "PS256"/, 'an unknown algorithm' ],
    );
    for my $c (@cases) {
        my ($code, $out) = conf_t($c->[0]);
        ok($code != 0 && $out =~ /\[emerg\].*$c->[1].* in \S+nginx\.conf:\d+/,
           "nginx -t: $c->[2], with file and line")
            or diag($out);
    }

    my ($code, $out) = Test::Chat::Nginx->nginx_t(
        http => 'chat_zone chat 1m;',
        server => "location = /c { chat chat; chat_jwt \$arg_token; }");
    ok($code != 0 && $out =~ /"chat_jwt" needs "chat_jwt_key"/,
       'nginx -t: chat_jwt without a key') or diag($out);

    chmod 0, "$dir/hs-new.key";
    if ($> != 0) {
        ($code, $out) = conf_t("$dir/hs-new.key");
        ok($code != 0 && $out =~ /cannot open/, 'nginx -t: an unreadable key');
    } else {
        pass('nginx -t: an unreadable key (root reads anything; skipped)');
    }
    chmod 0644, "$dir/hs-new.key";
}

# --- reload rotates the key --------------------------------------------------
{
    my $old = token(claims => { sub => 'rot' });
    my $new = token(claims => { sub => 'rot' }, key => 'the rotated secret');
    ok($t->reload(http => 'chat_zone chat 1m;',
                 server => server_conf("$dir/hs-new.key")), 'reload with a new secret')
        or diag($t->reload_error);
    my ($ws) = open_with('hs256', $old);
    is($ws->ok ? 101 : $ws->status, 401, 'after the reload the old secret\'s token is refused');
    my ($ws2, $w2) = open_with('hs256', $new);
    ok($w2 && $w2->{user} eq 'rot', 'and the new secret\'s is accepted');
    $ws->close if $ws->ok;
    $ws2->close if $ws2->ok;
}

my @bad = $t->grep_error_log(qr/\[(?:alert|crit|emerg)\]/);
is(scalar @bad, 0, 'no [alert], [crit] or [emerg] in error.log')
    or diag(join "\n", @bad);

undef $t;

done_testing();
