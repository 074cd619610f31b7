package Test::Nginx::Socket;

# A small, clean-room reimplementation of the documented behaviour of the
# Test::Nginx::Socket test scaffold (data-driven nginx tests on top of
# Test::Base).  Only the subset described in t/lib/README.md is supported.
# Test files written for it are meant to run unchanged under the real
# Test::Nginx::Socket as well.

use strict;
use warnings;

require Test::Base;
our @ISA = ('Test::Base');

use Test::More ();
use Cwd ();
use File::Path ();
use File::Basename ();
use IO::Socket::INET ();
use IO::Select ();
use POSIX ();
use Time::HiRes ();

our $VERSION = '0.01';

# not in the real Test::Nginx::Socket: the runner's own self-tests
# (t/000-runner.t, t/003-runner-meta.t) and t/004-runner-loaded.t look at it
our $CleanRoom = 1;

our @EXPORT = qw(
    run_tests repeat_each no_shuffle no_long_string log_level
    master_on master_off master_process_enabled workers worker_connections
    env_to_nginx no_root_location html_dir server_root server_port
    server_addr add_block_preprocessor
    $ServerPort $ServerAddr $ServRoot $ServerRoot $HtmlDir $NginxBinary
);

# ---------------------------------------------------------------------------
# configuration (package variables, tweakable by the exported functions)

our $RepeatEach           = 1;
our $LogLevel             = 'debug';
our $MasterProcessEnabled = 0;
our $DaemonEnabled        = 1;
our $Workers              = 1;
our $WorkerConnections    = 64;
our $NoRootLocation       = 0;
our $NoLongString         = 0;
our $NoShuffle            = 0;
our @EnvToNginx;
our @BlockPreprocessors;

our $Timeout       = 3;      # default per-request socket timeout (seconds)
our $StartTimeout  = 15;     # seconds to wait for nginx to come up
our $StopTimeout   = 10;     # seconds to wait for nginx to exit

our $Cwd        = Cwd::getcwd();
our $ServerAddr = '127.0.0.1';
our $ServerPort = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT} || 1984;
our $ServRoot   = _abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
$ServRoot =~ s{/+$}{};
our $ServerRoot = $ServRoot;
our $HtmlDir    = "$ServRoot/html";
our $ConfDir    = "$ServRoot/conf";
our $LogDir     = "$ServRoot/logs";
our $ConfFile   = "$ConfDir/nginx.conf";
our $ErrLogFile = "$LogDir/error.log";
our $AccLogFile = "$LogDir/access.log";
our $PidFile    = "$LogDir/nginx.pid";
our $StartErrFile = "$LogDir/nginx-start.stderr";
our $NginxBinary = _find_nginx();

my $NginxPid;          # pid of the nginx we started (master or single)
my $LogPos = 0;        # error.log offset where the next checks start
my $OwnerPid = $$;

sub _abs {
    my $p = shift;
    return $p if $p =~ m{^/};
    return "$Cwd/$p";
}

sub _find_nginx {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    for my $dir (split /:/, $ENV{PATH} || '') {
        next unless length $dir;
        return "$dir/nginx" if -f "$dir/nginx" && -x _;
    }
    return '/usr/sbin/nginx';
}

# ---------------------------------------------------------------------------
# exported setters / getters

sub repeat_each {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub no_shuffle     { $NoShuffle = 1 }
sub no_long_string { $NoLongString = 1 }

sub log_level {
    $LogLevel = shift if @_;
    return $LogLevel;
}

sub master_on  { $MasterProcessEnabled = 1 }
sub master_off { $MasterProcessEnabled = 0 }

sub master_process_enabled {
    $MasterProcessEnabled = shift if @_;
    return $MasterProcessEnabled;
}

sub workers {
    $Workers = shift if @_;
    return $Workers;
}

sub worker_connections {
    $WorkerConnections = shift if @_;
    return $WorkerConnections;
}

sub env_to_nginx     { push @EnvToNginx, @_ }
sub no_root_location { $NoRootLocation = 1 }
sub html_dir         { $HtmlDir }
sub server_root      { $ServRoot }
sub server_port      { $ServerPort }
sub server_addr      { $ServerAddr }

sub add_block_preprocessor {
    my $cb = shift;
    die "add_block_preprocessor needs a code reference\n"
        unless ref $cb eq 'CODE';
    push @BlockPreprocessors, $cb;
}

# ---------------------------------------------------------------------------
# helpers for sections

sub _section_filters {
    my ($block, $sec) = @_;
    my $map = $block->{_section_map} || {};
    $map = $map->[0] if ref $map eq 'ARRAY';
    $map ||= {};
    return $map->{$sec} ? ($map->{$sec}{filters} || '') : '';
}

sub _is_eval {
    my ($block, $sec) = @_;
    return _section_filters($block, $sec) =~ /\beval\b/ ? 1 : 0;
}

# value of a section: scalar if a single value, arrayref if eval produced
# several values, undef if the section is absent
sub _val {
    my ($block, $sec) = @_;
    return undef unless exists $block->{$sec};
    my @v = @{ $block->{$sec} };
    return undef unless @v;
    return $v[0] if @v == 1;
    return [@v];
}

my %Builtin = (
    TEST_NGINX_SERVER_PORT => sub { $ServerPort },
    TEST_NGINX_CLIENT_PORT => sub { $ServerPort },
    TEST_NGINX_SERVER_ADDR => sub { $ServerAddr },
    TEST_NGINX_HTML_DIR    => sub { $HtmlDir },
    TEST_NGINX_SERVER_ROOT => sub { $ServRoot },
    TEST_NGINX_SERVROOT    => sub { $ServRoot },
);

# replace $TEST_NGINX_FOO by built-in values or %ENV
sub expand_env_in_text {
    my $text = shift;
    return $text unless defined $text && !ref $text;
    $text =~ s{\$(TEST_NGINX_[A-Za-z0-9_]+)}{
        my $n = $1;
        if ($Builtin{$n}) { $Builtin{$n}->() }
        elsif (defined $ENV{$n}) { $ENV{$n} }
        else { die "No environment $n defined.\n" }
    }ge;
    return $text;
}

my @ExpandSections = qw(
    main_config http_config config server_config request raw_request
    more_headers user_files response_body response_body_like
    response_headers response_headers_like error_log no_error_log
    response_body_unlike raw_response_headers_like raw_response_headers_unlike
    grep_error_log grep_error_log_out
);

sub _expand_block {
    my $block = shift;
    for my $sec (@ExpandSections) {
        next unless exists $block->{$sec};
        $block->{$sec} = [ map {
            (defined $_ && !ref $_) ? expand_env_in_text($_)
          : (ref $_ eq 'ARRAY')     ? [ map { (defined $_ && !ref $_) ? expand_env_in_text($_) : $_ } @$_ ]
          : $_
        } @{ $block->{$sec} } ];
    }
}

# list of patterns from error_log / no_error_log style sections
sub _patterns {
    my ($block, $sec) = @_;
    return () unless exists $block->{$sec};
    my @out;
    for my $v (@{ $block->{$sec} }) {
        next unless defined $v;
        if (ref $v eq 'ARRAY') {
            push @out, grep { defined && (ref || length) } @$v;
        } elsif (ref $v eq 'Regexp') {
            push @out, $v;
        } else {
            push @out, grep { /\S/ } split /\n/, $v;
        }
    }
    return @out;
}

sub _header_lines {
    my ($block, $sec) = @_;
    return () unless exists $block->{$sec};
    my @out;
    for my $v (@{ $block->{$sec} }) {
        next unless defined $v;
        my @l = ref $v eq 'ARRAY' ? @$v : split /\n/, $v;
        push @out, grep { /\S/ } @l;
    }
    return @out;
}

sub _has_request {
    my $block = shift;
    return defined _val($block, 'request') || defined _val($block, 'raw_request');
}

# Number of assertions one repetition of $block emits (see README.md).
sub block_test_count {
    my $block = shift;
    my $n = 0;
    my @c = _patterns($block, 'error_log');
    $n += @c;
    @c = _patterns($block, 'no_error_log');
    $n += @c;
    $n += 1 if defined _val($block, 'grep_error_log')
               && defined _val($block, 'grep_error_log_out');
    return $n + 1 if defined $block->{must_die};    # "nginx died" check
    if (_has_request($block) && !defined $block->{ignore_response}) {
        $n += 1;    # status code
        @c = _header_lines($block, 'response_headers');
        $n += @c;
        @c = _header_lines($block, 'response_headers_like');
        $n += @c;
        $n += 1 if defined _val($block, 'response_body');
        $n += 1 if defined _val($block, 'response_body_like');
        $n += 1 if defined _val($block, 'response_body_unlike');
        $n += 1 if defined _val($block, 'raw_response_headers_like');
        $n += 1 if defined _val($block, 'raw_response_headers_unlike');
    }
    return $n;
}

# ---------------------------------------------------------------------------
# nginx.conf

sub _load_module_lines {
    my @m = grep { length } split /\s+/, ($ENV{TEST_NGINX_LOAD_MODULES} || '');
    return join '', map { "load_module " . _abs($_) . ";\n" } @m;
}

sub _block_text {
    my ($block, $sec) = @_;
    my $v = _val($block, $sec);
    return '' unless defined $v;
    $v = join "\n", @$v if ref $v eq 'ARRAY';
    return $v;
}

sub write_config {
    my $block = shift;
    my $level = defined _val($block, 'log_level')
              ? _block_text($block, 'log_level') : $LogLevel;
    $level =~ s/\s+//g;

    my $main = _block_text($block, 'main_config');
    my $http = _block_text($block, 'http_config');
    my $conf = _block_text($block, 'config');
    my $srv_name = defined _val($block, 'server_name')
                 ? _block_text($block, 'server_name') : 'localhost';
    $srv_name =~ s/^\s+|\s+$//g;

    my $env = '';
    for my $name (@EnvToNginx) {
        $env .= "env $name;\n";
    }
    for my $name (qw(ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS LD_PRELOAD)) {
        $env .= "env $name;\n" if defined $ENV{$name};
    }

    my $user = ($> == 0 && $MasterProcessEnabled) ? "user root;\n" : '';
    my $master = $MasterProcessEnabled ? 'on' : 'off';
    my $daemon = $DaemonEnabled ? 'on' : 'off';
    my $root_loc = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_

    my $text = <<"_EOC_";
# generated by t/lib/Test/Nginx/Socket.pm
${\ _load_module_lines()}${user}worker_processes $Workers;
daemon $daemon;
master_process $master;
error_log $ErrLogFile $level;
pid $PidFile;
$env
# main_config begin
$main
# main_config end

events {
    accept_mutex off;
    worker_connections $WorkerConnections;
}

http {
    access_log $AccLogFile;
    default_type text/plain;
    keepalive_timeout 68;

    client_body_temp_path $ServRoot/client_body_temp;
    proxy_temp_path $ServRoot/proxy_temp;
    fastcgi_temp_path $ServRoot/fastcgi_temp;
    uwsgi_temp_path $ServRoot/uwsgi_temp;
    scgi_temp_path $ServRoot/scgi_temp;

    # http_config begin
$http
    # http_config end

    server {
        listen $ServerAddr:$ServerPort;
        server_name $srv_name;
        client_max_body_size 30M;

        # config begin
$conf
        # config end

$root_loc    }
}
_EOC_

    _spew($ConfFile, $text);
    return $text;
}

sub _spew {
    my ($file, $content) = @_;
    File::Path::make_path(File::Basename::dirname($file));
    open my $fh, '>', $file or die "cannot write $file: $!\n";
    binmode $fh;
    print $fh $content;
    close $fh or die "cannot write $file: $!\n";
}

sub _slurp {
    my $file = shift;
    open my $fh, '<', $file or return undef;
    binmode $fh;
    local $/;
    my $c = <$fh>;
    close $fh;
    return defined $c ? $c : '';
}

sub _prepare_servroot {
    File::Path::remove_tree($ServRoot) if -d $ServRoot;
    File::Path::make_path($ConfDir, $HtmlDir, $LogDir);
}

sub write_user_files {
    my $block = shift;
    return unless exists $block->{user_files};
    for my $v (@{ $block->{user_files} }) {
        next unless defined $v;
        my @files;
        if (ref $v eq 'ARRAY') {
            for my $f (@$v) {
                push @files, [ $f->[0], $f->[1] ] if ref $f eq 'ARRAY';
            }
        } else {
            my ($cur, $buf);
            for my $line (split /^/m, $v) {
                if ($line =~ /^>>> (\S+)/) {
                    push @files, [ $cur, $buf ] if defined $cur;
                    ($cur, $buf) = ($1, '');
                } elsif (defined $cur) {
                    $buf .= $line;
                }
            }
            push @files, [ $cur, $buf ] if defined $cur;
        }
        for my $f (@files) {
            my ($name, $content) = @$f;
            $content = '' unless defined $content;
            my $path = $name =~ m{^/} ? $name : "$HtmlDir/$name";
            _spew($path, $content);
        }
    }
}

# ---------------------------------------------------------------------------
# process control

sub _alive {
    my $pid = shift;
    return 0 unless $pid && kill(0, $pid);
    # a zombie (exited, not yet reaped by its parent) counts as dead
    if (open my $fh, '<', "/proc/$pid/stat") {
        my $s = <$fh>;
        close $fh;
        return 0 if defined $s && $s =~ /\)\s+Z\s/;
    }
    return 1;
}

sub _is_nginx_pid {
    my $pid = shift;
    my $cmd = _slurp("/proc/$pid/cmdline");
    return defined $cmd && $cmd =~ /nginx/;
}

sub _read_pid {
    my $c = _slurp($PidFile);
    return undef unless defined $c && $c =~ /(\d+)/;
    return $1;
}

sub stop_nginx {
    my $pid = $NginxPid;
    $pid = _read_pid() unless $pid;
    undef $NginxPid;
    return unless $pid && _alive($pid) && _is_nginx_pid($pid);
    kill 'TERM', $pid;
    my $deadline = Time::HiRes::time() + $StopTimeout;
    while (_alive($pid) && Time::HiRes::time() < $deadline) {
        Time::HiRes::sleep(0.02);
    }
    if (_alive($pid)) {
        Test::More::diag("nginx (pid $pid) did not exit on TERM, killing it");
        kill 'KILL', $pid;
        Time::HiRes::sleep(0.1);
    }
}

# Run the nginx binary on the current config.  Returns (exit_code, stderr).
sub _run_nginx_binary {
    my @extra = @_;
    unlink $StartErrFile;
    File::Path::make_path($LogDir);
    my $pid = fork;
    die "fork failed: $!\n" unless defined $pid;
    if ($pid == 0) {
        open STDIN,  '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $StartErrFile;
        exec $NginxBinary, @extra, '-p', "$ServRoot/", '-c', $ConfFile
            or do { print STDERR "exec $NginxBinary failed: $!\n"; POSIX::_exit(127) };
    }
    my $deadline = Time::HiRes::time() + $StartTimeout;
    my $status;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $status = $?; last }
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $status = -1;
            last;
        }
        Time::HiRes::sleep(0.01);
    }
    my $err = _slurp($StartErrFile);
    $err = '' unless defined $err;
    my $code = $status == -1 ? -1 : ($status & 127) ? 128 + ($status & 127) : $status >> 8;
    return ($code, $err);
}

# Start nginx for the current config.  Returns (1) or (0, diagnostics).
sub start_nginx {
    my $old = _read_pid();
    stop_nginx() if $old;
    unlink $PidFile;
    my ($code, $err) = _run_nginx_binary();
    if ($code != 0) {
        return (0, "nginx exited with code $code\nstderr:\n$err"
                   . _tail_error_log());
    }
    my $deadline = Time::HiRes::time() + $StartTimeout;
    my $pid;
    while (Time::HiRes::time() < $deadline) {
        $pid = _read_pid();
        last if $pid && _alive($pid);
        Time::HiRes::sleep(0.01);
    }
    unless ($pid && _alive($pid)) {
        return (0, "nginx did not write a pid file or died right after start\n"
                   . "stderr:\n$err" . _tail_error_log());
    }
    $NginxPid = $pid;
    $LogPos = 0;
    return (1);
}

sub _tail_error_log {
    my $c = _slurp($ErrLogFile);
    return '' unless defined $c && length $c;
    my @l = split /\n/, $c;
    @l = @l[-20 .. -1] if @l > 20;
    return "\nerror.log (last lines):\n" . join("\n", @l) . "\n";
}

END {
    # only an nginx this process started (never one found via a pid file)
    if ($$ == $OwnerPid && $NginxPid && !$ENV{TEST_NGINX_NO_CLEAN}) {
        local $?;
        stop_nginx();
    }
}

# ---------------------------------------------------------------------------
# HTTP client

sub _parse_timeout {
    my $t = shift;
    return undef unless defined $t;
    $t = join '', @$t if ref $t eq 'ARRAY';
    return $1 / 1000 if $t =~ /^\s*([\d.]+)\s*ms\s*$/;
    return $1 if $t =~ /^\s*([\d.]+)\s*s?\s*$/;
    return undef;
}

# returns { raw => bytes, method => ... } or dies
sub build_request {
    my $block = shift;
    my $raw = _val($block, 'raw_request');
    if (defined $raw) {
        $raw = join '', @$raw if ref $raw eq 'ARRAY';
        my ($m) = $raw =~ /^\s*(\S+)/;
        return { raw => $raw, method => uc($m || 'GET') };
    }
    my $req = _val($block, 'request');
    die "no request section\n" unless defined $req;
    $req = join '', @$req if ref $req eq 'ARRAY';
    my $is_eval = _is_eval($block, 'request');

    # drop leading blank and comment lines
    $req =~ s/\A(?:[ \t]*(?:#[^\n]*)?\n)+//;
    $req =~ s/\A\s+//;
    my ($first, $body) = split /\n/, $req, 2;
    $body = '' unless defined $body;
    $body =~ s/\n\z// unless $is_eval;
    $first =~ s/\r$//;
    $first =~ /^(\S+)\s+(\S+)(?:\s+(HTTP\/\d+\.\d+))?\s*$/
        or die "bad request line: '$first'\n";
    my ($meth, $uri, $ver) = ($1, $2, $3 || 'HTTP/1.1');

    my @hdrs;
    for my $l (_header_lines($block, 'more_headers')) {
        $l =~ s/\r$//;
        push @hdrs, $l;
    }
    my %have = map { /^([^:]+?)\s*:/ ? (lc $1 => 1) : () } @hdrs;

    my $r = "$meth $uri $ver\r\n";
    $r .= "Host: localhost\r\n" unless $have{host};
    $r .= "Connection: close\r\n" if $ver eq 'HTTP/1.1' && !$have{connection};
    if (!$have{'content-length'} && !$have{'transfer-encoding'}
        && (length $body || $meth =~ /^(?:POST|PUT|PATCH)$/))
    {
        $r .= "Content-Length: " . length($body) . "\r\n";
    }
    $r .= "$_\r\n" for @hdrs;
    $r .= "\r\n";
    $r .= $body;
    return { raw => $r, method => uc $meth };
}

# Parse an HTTP response from $buf.  Returns a hashref with
# complete => 0|1 and, once headers are there, status/headers/body.
sub parse_http_response {
    my ($buf, $eof, $method) = @_;
    $method ||= 'GET';
    my $res = { complete => 0, status => undef, headers => [], body => '' };
    my $pos = 0;
    while (1) {
        my $hend = index($buf, "\r\n\r\n", $pos);
        my $seplen = 4;
        if ($hend < 0) {
            $hend = index($buf, "\n\n", $pos);
            $seplen = 2;
        }
        if ($hend < 0) {
            $res->{error} = 'incomplete response header' if $eof;
            return $res;
        }
        my $head = substr($buf, $pos, $hend - $pos);
        my @lines = split /\r?\n/, $head;
        my $sl = shift @lines;
        unless (defined $sl && $sl =~ m{^HTTP/(\d+\.\d+)\s+(\d{3})(?:\s+(.*))?$}) {
            $res->{error} = 'bad status line: ' . (defined $sl ? $sl : '');
            $res->{complete} = 1 if $eof;
            return $res;
        }
        $res->{protocol} = "HTTP/$1";
        $res->{status} = $2;
        $res->{reason} = defined $3 ? $3 : '';
        my @h;
        for my $l (@lines) {
            if ($l =~ /^[ \t]/ && @h) { $h[-1][1] .= " $l"; next }
            push @h, [ $1, $2 ] if $l =~ /^([^:]+?)\s*:\s*(.*?)\s*$/;
        }
        $res->{headers} = \@h;
        $pos = $hend + $seplen;
        # as the real runner: up to the last header line's line end, not
        # the empty line after it
        $res->{raw_headers} = substr($buf, 0, $hend + $seplen / 2);
        # skip interim 1xx responses except 101
        if ($res->{status} =~ /^1/ && $res->{status} != 101) {
            next;
        }
        last;
    }
    my $rest = substr($buf, $pos);
    my $st = $res->{status};
    my %h;
    for (@{ $res->{headers} }) {
        my $k = lc $_->[0];
        $h{$k} = defined $h{$k} ? "$h{$k}, $_->[1]" : $_->[1];
    }
    if ($st == 101) {
        $res->{body} = $rest;
        $res->{upgraded} = 1;
        $res->{complete} = $eof ? 1 : 0;
        return $res;
    }
    if ($method eq 'HEAD' || $st == 204 || $st == 304) {
        $res->{complete} = 1;
        return $res;
    }
    if (defined $h{'transfer-encoding'} && $h{'transfer-encoding'} =~ /chunked/i) {
        my $body = '';
        my $p = 0;
        while (1) {
            my $le = index($rest, "\r\n", $p);
            if ($le < 0) { last }
            my $line = substr($rest, $p, $le - $p);
            unless ($line =~ /^([0-9a-fA-F]+)/) {
                $res->{error} = "bad chunk size line: '$line'";
                $res->{body} = $body;
                $res->{complete} = 1;
                return $res;
            }
            my $size = hex $1;
            if ($size == 0) {
                # trailers end with an empty line
                my $te = index($rest, "\r\n", $le + 2);
                my $tp = $le + 2;
                while ($te >= 0 && $te != $tp) {
                    $tp = $te + 2;
                    $te = index($rest, "\r\n", $tp);
                }
                if ($te >= 0) {
                    $res->{body} = $body;
                    $res->{complete} = 1;
                    return $res;
                }
                last;
            }
            last if length($rest) < $le + 2 + $size + 2;
            $body .= substr($rest, $le + 2, $size);
            $p = $le + 2 + $size + 2;
        }
        $res->{body} = $body;
        if ($eof) {
            $res->{error} = 'truncated chunked body (no last chunk found)';
            $res->{complete} = 1;
        }
        return $res;
    }
    if (defined $h{'content-length'} && $h{'content-length'} =~ /^\s*(\d+)/) {
        my $len = $1;
        if (length($rest) >= $len) {
            $res->{body} = substr($rest, 0, $len);
            $res->{complete} = 1;
        } else {
            $res->{body} = $rest;
            if ($eof) {
                $res->{error} = "truncated body (got " . length($rest)
                              . " of $len bytes)";
                $res->{complete} = 1;
            }
        }
        return $res;
    }
    $res->{body} = $rest;
    $res->{complete} = 1 if $eof;
    return $res;
}

# Send $req (from build_request) and read the response.
sub send_request {
    my ($req, $timeout) = @_;
    $timeout = $Timeout unless defined $timeout;
    my $deadline = Time::HiRes::time() + $timeout;
    my $sock = IO::Socket::INET->new(
        PeerAddr => $ServerAddr, PeerPort => $ServerPort,
        Proto => 'tcp', Timeout => $timeout,
    );
    unless ($sock) {
        return { error => "cannot connect to $ServerAddr:$ServerPort: $!",
                 status => undef, headers => [], body => '', complete => 0 };
    }
    binmode $sock;
    local $SIG{PIPE} = 'IGNORE';
    my $sel = IO::Select->new($sock);
    my $out = $req->{raw};
    my $timed_out = 0;
    while (length $out) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0 || !$sel->can_write($left)) { $timed_out = 1; last }
        my $n = syswrite($sock, $out);
        last unless defined $n;    # peer closed; read what it said
        substr($out, 0, $n, '');
    }
    my ($buf, $eof) = ('', 0);
    my $res;
    my $linger_until;
    while (1) {
        $res = parse_http_response($buf, $eof, $req->{method});
        last if $eof;
        # A complete response is not the end: as the real runner, read
        # until nginx closes the connection.  A response on a connection
        # that stays open (keep-alive) runs into the timeout and fails,
        # as it does there; such a request must ask for Connection: close.
        if ($res->{upgraded}) {
            # after "101 Switching Protocols": collect what comes in a short
            # quiet period, then stop (not an error)
            $linger_until ||= Time::HiRes::time() + 0.3;
        }
        my $now = Time::HiRes::time();
        my $limit = $deadline;
        $limit = $linger_until if $linger_until && $linger_until < $limit;
        my $left = $limit - $now;
        if ($left <= 0) {
            $timed_out = 1 unless $linger_until && $linger_until <= $deadline;
            last;
        }
        if (!$sel->can_read($left)) { next }
        my $n = sysread($sock, my $chunk, 65536);
        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            $eof = 1;              # e.g. connection reset
            next;
        }
        if ($n == 0) { $eof = 1; next }
        $buf .= $chunk;
    }
    close $sock;
    $res = parse_http_response($buf, 1, $req->{method}) if $timed_out && !$res->{status};
    $res->{raw} = $buf;
    $res->{timed_out} = $timed_out ? 1 : 0;
    $res->{kept_open} = $timed_out && $res->{complete} ? 1 : 0;
    $res->{timed_out} = $res->{kept_open} = 0 if $res->{upgraded};
    return $res;
}

sub _header_value {
    my ($res, $name) = @_;
    my @v = map { $_->[1] } grep { lc $_->[0] eq lc $name } @{ $res->{headers} || [] };
    return undef unless @v;
    return join ', ', @v;
}

# ---------------------------------------------------------------------------
# log checks

sub _error_log_since {
    my $pos = shift;
    my $c = _slurp($ErrLogFile);
    return ('', 0) unless defined $c;
    my $size = length $c;
    $pos = 0 if $pos > $size;      # log was truncated/recreated
    return (substr($c, $pos), $size);
}

sub _match_line {
    my ($pat, $lines) = @_;
    for my $l (@$lines) {
        if (ref $pat eq 'Regexp') { return 1 if $l =~ $pat }
        else                      { return 1 if index($l, $pat) >= 0 }
    }
    return 0;
}

sub _pat_str {
    my $p = shift;
    return ref $p eq 'Regexp' ? "$p" : qq{"$p"};
}

sub _grep_log {
    my ($pat, $lines) = @_;
    my $out = '';
    for my $l (@$lines) {
        if (ref $pat eq 'Regexp') {
            while ($l =~ /$pat/g) {
                $out .= "$&\n";
                last if length($&) == 0;
            }
        } else {
            next unless length $pat;
            my $p = 0;
            while ((my $i = index($l, $pat, $p)) >= 0) {
                $out .= "$pat\n";
                $p = $i + length $pat;
            }
        }
    }
    return $out;
}

# $get_log->() returns the log text to check; called again while waiting
# for expected messages to show up.
sub _check_logs {
    my ($block, $name, $rep, $get_log, $no_wait) = @_;
    my @want = _patterns($block, 'error_log');
    my @dont = _patterns($block, 'no_error_log');
    my $grep = _val($block, 'grep_error_log');
    my $grep_out = _val($block, 'grep_error_log_out');
    my $has_grep = defined $grep && defined $grep_out;
    return unless @want || @dont || $has_grep;

    my $log = $get_log->();
    my @lines = split /\n/, $log;
    if (@want && !$no_wait) {
        my $deadline = Time::HiRes::time() + 1;
        while (Time::HiRes::time() < $deadline) {
            last unless grep { !_match_line($_, \@lines) } @want;
            Time::HiRes::sleep(0.05);
            $log = $get_log->();
            @lines = split /\n/, $log;
        }
    }
    for my $p (@want) {
        Test::More::ok(_match_line($p, \@lines),
            "$name - pattern " . _pat_str($p) . " should match a line in error.log$rep")
            or Test::More::diag("error log checked:\n" . _shorten($log));
    }
    for my $p (@dont) {
        my @hits = grep { _match_line($p, [$_]) } @lines;
        Test::More::ok(!@hits,
            "$name - pattern " . _pat_str($p) . " should not match any line in error.log$rep")
            or Test::More::diag("matching lines:\n" . join("\n", @hits[0 .. ($#hits > 9 ? 9 : $#hits)]));
    }
    if ($has_grep) {
        $grep = $grep->[0] if ref $grep eq 'ARRAY';
        $grep =~ s/\n\z// unless ref $grep;
        my $got = _grep_log($grep, \@lines);
        my $exp = $grep_out;
        if (ref $exp eq 'ARRAY') {
            my $i = $rep =~ /\(req (\d+)\)/ ? $1 : 0;
            $exp = $exp->[$i > $#$exp ? -1 : $i];
        }
        if (ref $exp eq 'Regexp') {
            Test::More::like($got, $exp, "$name - grep_error_log_out$rep");
        } else {
            Test::More::is($got, $exp, "$name - grep_error_log_out$rep");
        }
    }
}

sub _shorten {
    my $s = shift;
    my @l = split /\n/, $s;
    return $s if @l <= 40;
    return join("\n", "... (" . (@l - 40) . " earlier lines omitted)", @l[-40 .. -1]);
}

# ---------------------------------------------------------------------------
# running blocks

sub _fail_block {
    my ($count, $msg, $diag) = @_;
    $count = 1 if $count < 1;
    Test::More::fail($msg);
    Test::More::diag($diag) if defined $diag && length $diag;
    SKIP: {
        Test::More::skip("$msg (see above)", $count - 1) if $count > 1;
    }
}

sub run_block {
    my $block = shift;
    my $name = $block->name;
    $name = 'unnamed block' unless defined $name && length $name;

    for my $pp (@BlockPreprocessors) { $pp->($block) }

    eval { _expand_block($block); 1 } or do {
        my $e = $@;
        _fail_block(block_test_count($block) * $RepeatEach, "$name - $e");
        return;
    };

    my $count = block_test_count($block);

    stop_nginx();
    _prepare_servroot();
    write_config($block);
    write_user_files($block);

    if (defined $block->{must_die}) {
        for my $i (0 .. $RepeatEach - 1) {
            my $rep = $RepeatEach > 1 ? " (req $i)" : '';
            my ($code, $err) = _run_nginx_binary();
            if ($code != 0) {
                Test::More::pass("$name - nginx died as expected$rep");
            } else {
                Test::More::fail("$name - nginx must die but it started$rep");
                my $until = Time::HiRes::time() + 3;
                Time::HiRes::sleep(0.02)
                    while !_read_pid() && Time::HiRes::time() < $until;
                stop_nginx();
            }
            _check_logs($block, $name, $rep, sub {
                my $e = _slurp($StartErrFile);
                my $l = _slurp($ErrLogFile);
                return (defined $e ? $e : '') . (defined $l ? $l : '');
            }, 1);
        }
        return;
    }

    my ($ok, $why) = start_nginx();
    unless ($ok) {
        _fail_block($count * $RepeatEach, "$name - nginx failed to start", $why);
        return;
    }

    my $timeout = _parse_timeout(_val($block, 'timeout'));
    $timeout = $Timeout unless defined $timeout;
    my $wait = _parse_timeout(_val($block, 'wait'));
    my $abort = defined $block->{abort};

    for my $i (0 .. $RepeatEach - 1) {
        my $rep = $RepeatEach > 1 ? " (req $i)" : '';
        write_user_files($block) if $i > 0;

        my $res;
        if (_has_request($block)) {
            my $req = eval { build_request($block) };
            if (!$req) {
                _fail_block($count, "$name - cannot build request$rep", $@);
                next;
            }
            $res = send_request($req, $timeout);
            _check_response($block, $name, $rep, $res, $abort)
                unless defined $block->{ignore_response};
        }

        Time::HiRes::sleep($wait) if $wait;
        Time::HiRes::sleep(0.01);
        _check_logs($block, $name, $rep, sub {
            my ($text) = _error_log_since($LogPos);
            return $text;
        });
        my (undef, $sz) = _error_log_since(0);
        $LogPos = $sz;
    }
}

sub _check_response {
    my ($block, $name, $rep, $res, $abort) = @_;

    # status code
    my $exp = _val($block, 'error_code');
    $exp = 200 unless defined $exp;
    $exp = join '', @$exp if ref $exp eq 'ARRAY';
    $exp =~ s/^\s+|\s+$//g;
    if ($res->{timed_out} && !$abort) {
        Test::More::fail("$name - status code ok$rep");
        Test::More::diag("ERROR: client socket timed out - $name$rep"
            . (defined $res->{status} ? " (status was $res->{status})" : '')
            . ($res->{kept_open}
               ? "\nthe response was complete but nginx kept the connection"
                 . " open: the runner reads until it closes (ask for"
                 . " Connection: close)"
               : ''));
    } elsif ($res->{error} && !$abort && !$res->{timed_out}) {
        Test::More::fail("$name - status code ok$rep");
        Test::More::diag("bad response: $res->{error}\nraw response:\n"
            . _shorten(defined $res->{raw} ? $res->{raw} : ''));
    } else {
        Test::More::is($res->{status}, $exp, "$name - status code ok$rep");
    }

    for my $line (_header_lines($block, 'response_headers')) {
        if ($line =~ /^\s*!\s*([^\s:]+)\s*:?\s*$/) {
            my $h = $1;
            my $v = _header_value($res, $h);
            Test::More::ok(!defined $v, "$name - header $h not present$rep")
                or Test::More::diag("got: $h: $v");
        } elsif ($line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/) {
            my ($h, $e) = ($1, $2);
            Test::More::is(_header_value($res, $h), $e, "$name - header $h ok$rep");
        } else {
            Test::More::fail("$name - bad response_headers line: '$line'$rep");
        }
    }

    for my $line (_header_lines($block, 'response_headers_like')) {
        if ($line =~ /^\s*([^:]+?)\s*:\s*(.*?)\s*$/) {
            my ($h, $e) = ($1, $2);
            my $v = _header_value($res, $h);
            Test::More::like(defined $v ? $v : '', qr/^$e$/,
                "$name - header $h like ok$rep")
                or defined $v or Test::More::diag("header $h is missing");
        } else {
            Test::More::fail("$name - bad response_headers_like line: '$line'$rep");
        }
    }

    for my $sec (qw(raw_response_headers_like raw_response_headers_unlike)) {
        my $p = _val($block, $sec);
        next unless defined $p;
        $p = $p->[0] if ref $p eq 'ARRAY';
        my $re = ref $p eq 'Regexp' ? $p : qr/$p/s;
        my $raw = defined $res->{raw_headers} ? $res->{raw_headers} : '';
        if ($sec =~ /unlike/) {
            Test::More::unlike($raw, $re, "$name - raw resp headers unlike$rep");
        } else {
            Test::More::like($raw, $re, "$name - raw resp headers like$rep");
        }
    }

    my $body = defined $res->{body} ? $res->{body} : '';
    my $eb = _val($block, 'response_body');
    if (defined $eb) {
        $eb = join '', @$eb if ref $eb eq 'ARRAY';
        Test::More::is($body, $eb, "$name - response_body - response is expected$rep");
    }
    my $el = _val($block, 'response_body_like');
    if (defined $el) {
        $el = $el->[0] if ref $el eq 'ARRAY';
        my $re = ref $el eq 'Regexp' ? $el : qr/$el/s;
        Test::More::like($body, $re, "$name - response_body_like - response is expected$rep");
    }
    my $eu = _val($block, 'response_body_unlike');
    if (defined $eu) {
        $eu = $eu->[0] if ref $eu eq 'ARRAY';
        my $re = ref $eu eq 'Regexp' ? $eu : qr/$eu/s;
        Test::More::unlike($body, $re, "$name - response_body_unlike - response is expected$rep");
    }
}

# so that an interrupted run (Ctrl-C, kill, a closed pipe) still goes
# through END and stops nginx
sub _install_signal_handlers {
    for my $sig (qw(INT TERM HUP PIPE)) {
        my $cur = $SIG{$sig};
        next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
        $SIG{$sig} = sub {
            $SIG{$sig} = 'DEFAULT';
            print STDERR "# caught SIG$sig, stopping nginx\n" unless $sig eq 'PIPE';
            exit(128 + 1);
        };
    }
}

sub run_tests {
    _install_signal_handlers();
    my @blocks = Test::Base::blocks();
    for my $block (@blocks) {
        run_block($block);
    }
    stop_nginx() unless $ENV{TEST_NGINX_NO_CLEAN};
}

1;
