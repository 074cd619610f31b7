package Test::Chat::Nginx;

# nginx-tests style helper for multi-step tests: one nginx (master +
# workers, daemon) per object, in its own servroot, on a free port.
# See t/lib/README.md for the API.

use strict;
use warnings;

use Carp qw(croak carp);
use Cwd ();
use File::Path ();
use File::Spec ();
use File::Basename ();
use IO::Socket::INET ();
use IO::Select ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

our $VERSION = '0.01';

my @Instances;      # weak refs, for END
my $Seq = 0;
my $OwnerPid = $$;

our $StartTimeout = 20;
our $StopTimeout  = 10;

sub nginx_binary {
    return $ENV{TEST_NGINX_BINARY} if $ENV{TEST_NGINX_BINARY};
    for my $dir (split /:/, $ENV{PATH} || '') {
        next unless length $dir;
        return "$dir/nginx" if -f "$dir/nginx" && -x _;
    }
    return '/usr/sbin/nginx';
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or croak "cannot find a free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _abs {
    my $p = shift;
    return $p if $p =~ m{^/};
    return Cwd::getcwd() . "/$p";
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

sub _spew {
    my ($file, $content) = @_;
    File::Path::make_path(File::Basename::dirname($file));
    open my $fh, '>', $file or croak "cannot write $file: $!";
    binmode $fh;
    print $fh $content;
    close $fh or croak "cannot write $file: $!";
}

# ---------------------------------------------------------------------------

sub new {
    my ($class, %o) = @_;
    my $cwd = Cwd::getcwd();
    my $base = $ENV{TEST_CHAT_SERVROOT_BASE}
            || (-d "$cwd/t" ? "$cwd/t" : File::Spec->tmpdir);
    $Seq++;
    my $self = bless {
        workers   => defined $o{workers} ? $o{workers} : 1,
        master    => defined $o{master} ? ($o{master} ? 1 : 0) : 1,
        log_level => $o{log_level} || 'info',
        worker_connections => $o{worker_connections} || 1024,
        port      => $o{port} || free_port(),
        ports     => {},
        servroot  => _abs($o{servroot} || "$base/servroot_${$}_$Seq"),
        keep      => $o{keep} ? 1 : 0,
        binary    => $o{binary} || nginx_binary(),
        owner     => $$,
        running   => 0,
        opts      => { map { $_ => $o{$_} } qw(conf http server main) },
    }, ref($class) || $class;
    $self->{servroot} =~ s{/+$}{};

    unless (defined $o{conf} || defined $o{http} || defined $o{server}) {
        croak "Test::Chat::Nginx->new needs conf => ... or http/server => ...";
    }

    push @Instances, $self;
    Scalar::Util::weaken($Instances[-1]);
    _install_signal_handlers();

    $self->{conf_text} = $self->_build_conf(%{ $self->{opts} });
    $self->_prepare;

    if (!defined $o{start} || $o{start}) {
        $self->start
            or croak "nginx failed to start:\n$self->{start_output}";
    }
    return $self;
}

sub _install_signal_handlers {
    for my $sig (qw(INT TERM HUP PIPE)) {
        my $cur = $SIG{$sig};
        next if defined $cur && $cur ne '' && $cur ne 'DEFAULT';
        $SIG{$sig} = sub { print STDERR "caught SIG$sig, stopping nginx\n"; exit 1 };
    }
}

# ---------------------------------------------------------------------------
# config

sub port {
    my ($self, $n) = @_;
    return $self->{port} unless $n;
    return $self->{ports}{$n} ||= free_port();
}

sub servroot  { $_[0]{servroot} }
sub conf_path { "$_[0]{servroot}/conf/nginx.conf" }
sub conf_text { $_[0]{conf_text} }
sub error_log_path { "$_[0]{servroot}/logs/error.log" }
sub pid_path  { "$_[0]{servroot}/logs/nginx.pid" }
sub workers   { $_[0]{workers} }

sub _globals {
    my ($self, $conf) = @_;
    $conf = '' unless defined $conf;
    my $sr = $self->{servroot};
    my $has = sub { $conf =~ /^\s*$_[0]\b/m };
    my $g = "# globals added by Test::Chat::Nginx\n";
    for my $m (grep { length } split /\s+/, ($ENV{TEST_NGINX_LOAD_MODULES} || '')) {
        $g .= "load_module " . _abs($m) . ";\n";
    }
    $g .= "user root;\n" if $> == 0 && $self->{master} && !$has->('user');
    $g .= "daemon on;\n" unless $has->('daemon');
    $g .= "master_process " . ($self->{master} ? 'on' : 'off') . ";\n"
        unless $has->('master_process');
    $g .= "worker_processes $self->{workers};\n" unless $has->('worker_processes');
    $g .= "pid $sr/logs/nginx.pid;\n" unless $has->('pid');
    $g .= "error_log $sr/logs/error.log $self->{log_level};\n";
    for my $name (qw(ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS LD_PRELOAD)) {
        $g .= "env $name;\n" if defined $ENV{$name};
    }
    return $g;
}

sub _http_globals {
    my $self = shift;
    my $sr = $self->{servroot};
    return <<"_EOC_";
    # http globals added by Test::Chat::Nginx
    access_log $sr/logs/access.log;
    default_type text/plain;
    client_body_temp_path $sr/client_body_temp;
    proxy_temp_path $sr/proxy_temp;
    fastcgi_temp_path $sr/fastcgi_temp;
    uwsgi_temp_path $sr/uwsgi_temp;
    scgi_temp_path $sr/scgi_temp;
_EOC_
}

sub _substitute {
    my ($self, $text) = @_;
    $text =~ s/%%PORT%%/$self->{port}/g;
    $text =~ s/%%PORT_(\d+)%%/$self->port($1)/ge;
    $text =~ s/%%SERVROOT%%/$self->{servroot}/g;
    $text =~ s{\$(TEST_NGINX_[A-Za-z0-9_]+)}{
        my $n = $1;
        $n eq 'TEST_NGINX_SERVER_PORT' ? $self->{port}
      : $n eq 'TEST_NGINX_SERVER_ROOT' ? $self->{servroot}
      : $n eq 'TEST_NGINX_HTML_DIR'    ? "$self->{servroot}/html"
      : defined $ENV{$n}               ? $ENV{$n}
      : croak "No environment $n defined"
    }ge;
    return $text;
}

sub _build_conf {
    my ($self, %o) = @_;
    my $text;
    if (defined $o{conf}) {
        $text = $o{conf};
        my $body = $text;
        $body =~ s/%%TEST_GLOBALS(?:_HTTP)?%%//g;
        my $g = $self->_globals($body);
        unless ($text =~ s/%%TEST_GLOBALS%%/$g/) {
            $text = $g . $text;
        }
        my $hg = $self->_http_globals;
        unless ($text =~ s/%%TEST_GLOBALS_HTTP%%/$hg/) {
            $text =~ s/^(\s*http\s*\{[^\n]*\n)/$1$hg/m;
        }
        $text .= "\nevents { worker_connections $self->{worker_connections}; }\n"
            unless $text =~ /^\s*events\s*\{/m;
    } else {
        my $main = defined $o{main} ? $o{main} : '';
        my $http = defined $o{http} ? $o{http} : '';
        my $srv  = defined $o{server} ? $o{server} : '';
        $text = $self->_globals($main) . <<"_EOC_";
$main

events {
    worker_connections $self->{worker_connections};
}

http {
${\ $self->_http_globals }
$http

    server {
        listen 127.0.0.1:%%PORT%%;
        server_name localhost;

$srv
    }
}
_EOC_
    }
    return $self->_substitute($text);
}

sub _prepare {
    my $self = shift;
    my $sr = $self->{servroot};
    File::Path::make_path("$sr/conf", "$sr/logs", "$sr/html");
    _spew($self->conf_path, $self->{conf_text});
}

# set a new config (same arguments as new: conf, or http/server/main);
# written to disk, applied by the next reload or start
sub set_conf {
    my ($self, %o) = @_;
    $self->{opts} = { map { $_ => $o{$_} } qw(conf http server main) };
    $self->{workers} = $o{workers} if defined $o{workers};
    $self->{conf_text} = $self->_build_conf(%{ $self->{opts} });
    _spew($self->conf_path, $self->{conf_text});
}

# ---------------------------------------------------------------------------
# processes

sub _run {
    my ($self, @args) = @_;
    my $errf = "$self->{servroot}/logs/nginx-cmd.stderr";
    File::Path::make_path("$self->{servroot}/logs");
    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $errf;
        exec $self->{binary}, @args, '-p', "$self->{servroot}/", '-c', $self->conf_path
            or do { print STDERR "exec $self->{binary}: $!\n"; POSIX::_exit(127) };
    }
    my $deadline = Time::HiRes::time() + $StartTimeout;
    my $status;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $status = $?; last }
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $status = 9;
            last;
        }
        Time::HiRes::sleep(0.01);
    }
    my $out = _slurp($errf);
    my $code = ($status & 127) ? 128 + ($status & 127) : $status >> 8;
    return ($code, defined $out ? $out : '');
}

# true if the process exists and is not a zombie (exited nginx daemons
# are reparented to PID 1, which may reap them late)
sub pid_alive { _alive($_[-1]) }

sub _alive {
    my $pid = shift;
    return 0 unless $pid && kill(0, $pid);
    my $s = _slurp("/proc/$pid/stat");
    return 0 if defined $s && $s =~ /\)\s+Z\s/;
    return 1;
}

sub start {
    my $self = shift;
    croak "already running" if $self->{running};
    unlink $self->pid_path;
    my ($code, $out) = $self->_run;
    $self->{start_output} = $out;
    if ($code != 0) {
        $self->{start_output} = "exit code $code\n$out" . $self->_log_tail;
        return 0;
    }
    my $deadline = Time::HiRes::time() + $StartTimeout;
    my $pid;
    while (Time::HiRes::time() < $deadline) {
        my $c = _slurp($self->pid_path);
        ($pid) = defined $c ? $c =~ /(\d+)/ : ();
        last if $pid && _alive($pid);
        Time::HiRes::sleep(0.01);
    }
    unless ($pid && _alive($pid)) {
        $self->{start_output} = "no pid file / nginx died after start\n$out" . $self->_log_tail;
        return 0;
    }
    $self->{master_pid} = $pid;
    $self->{running} = 1;
    $self->{stopped_cleanly} = 0;
    if ($self->{master}) {
        unless ($self->wait_workers(timeout => $StartTimeout)) {
            $self->{start_output} = "workers did not come up\n" . $self->_log_tail;
            return 0;
        }
    }
    return 1;
}

sub _log_tail {
    my $self = shift;
    my $c = _slurp($self->error_log_path);
    return '' unless defined $c && length $c;
    my @l = split /\n/, $c;
    @l = @l[-20 .. -1] if @l > 20;
    return "\nerror.log (last lines):\n" . join("\n", @l) . "\n";
}

sub master_pid { $_[0]{master_pid} }
sub running    { $_[0]{running} && _alive($_[0]{master_pid}) }

# children of the master: (pid, title) pairs
sub _children {
    my $self = shift;
    my $m = $self->{master_pid} or return ();
    my @out;
    opendir my $d, '/proc' or return ();
    for my $pid (grep { /^\d+$/ } readdir $d) {
        my $stat = _slurp("/proc/$pid/stat");
        next unless defined $stat && $stat =~ /\)\s+(\S)\s+(\d+)/;
        next unless $2 == $m && $1 ne 'Z';
        my $cmd = _slurp("/proc/$pid/cmdline");
        next unless defined $cmd;
        $cmd =~ s/\0+/ /g;
        $cmd =~ s/\s+$//;
        push @out, [ $pid, $cmd ];
    }
    closedir $d;
    return @out;
}

# pids of the current workers ("nginx: worker process"); with all => 1
# also those that are shutting down after a reload
sub worker_pids {
    my ($self, %o) = @_;
    my @c = $self->_children;
    my @w = grep {
        $o{all} ? $_->[1] =~ /^nginx: worker process/
                : $_->[1] =~ /^nginx: worker process$/
    } @c;
    my @pids = sort { $a <=> $b } map { $_->[0] } @w;
    return @pids;    # in scalar context: the number of workers
}

# wait until exactly `count` (default: workers) current workers exist,
# none of them in `exclude`.  Returns the pids or () on timeout.
sub wait_workers {
    my ($self, %o) = @_;
    my $count = defined $o{count} ? $o{count} : $self->{workers};
    my %ex = map { $_ => 1 } @{ $o{exclude} || [] };
    my $deadline = Time::HiRes::time() + (defined $o{timeout} ? $o{timeout} : 10);
    while (1) {
        my @w = $self->worker_pids;
        return @w if @w == $count && !grep { $ex{$_} } @w;
        return () if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.02);
    }
}

# HUP the master (optionally with a new config, same args as set_conf)
# and wait for a complete set of new workers.  Returns 1, or 0 (see
# ->reload_error) on timeout or when nginx rejected the new config.
sub reload {
    my ($self, %o) = @_;
    croak "not running" unless $self->running;
    $self->set_conf(%o) if grep { defined $o{$_} } qw(conf http server main);
    $self->{workers} = $o{workers} if defined $o{workers};
    my @old = $self->worker_pids;
    my $mark = $self->log_mark;
    kill 'HUP', $self->{master_pid};
    my $deadline = Time::HiRes::time() + (defined $o{timeout} ? $o{timeout} : 10);
    while (1) {
        my $log = $self->error_log(since => $mark);
        if ($log =~ /^.*\[emerg\].*$/m) {
            $self->{reload_error} = "reload rejected: $&";
            return 0;
        }
        my %old = map { $_ => 1 } @old;
        my @w = $self->worker_pids;
        return 1 if @w == $self->{workers} && !grep { $old{$_} } @w;
        if (Time::HiRes::time() > $deadline) {
            $self->{reload_error} = "timeout waiting for new workers (old: @old, now: @w)";
            return 0;
        }
        Time::HiRes::sleep(0.02);
    }
}

sub reload_error { $_[0]{reload_error} }

# stop(graceful => 1) sends QUIT instead of TERM
sub stop {
    my ($self, %o) = @_;
    return 1 unless $self->{running};
    return 1 unless $$ == $self->{owner};
    my $m = $self->{master_pid};
    my @kids = map { $_->[0] } $self->_children;
    $self->{running} = 0;
    return 1 unless _alive($m);
    kill($o{graceful} ? 'QUIT' : 'TERM', $m);
    my $deadline = Time::HiRes::time() + (defined $o{timeout} ? $o{timeout} : $StopTimeout);
    while (Time::HiRes::time() < $deadline) {
        last unless grep { _alive($_) } $m, @kids;
        Time::HiRes::sleep(0.02);
    }
    my @left = grep { _alive($_) } $m, @kids;
    if (@left) {
        carp "nginx processes @left did not exit, killing them";
        kill 'KILL', @left;
        return 0;
    }
    $self->{stopped_cleanly} = 1;
    return 1;
}

# ---------------------------------------------------------------------------
# logs

sub log_mark {
    my $self = shift;
    my $size = -s $self->error_log_path;
    return $size || 0;
}

# error_log() or error_log(since => $mark)
sub error_log {
    my ($self, %o) = @_;
    my $c = _slurp($self->error_log_path);
    return '' unless defined $c;
    my $since = $o{since} || 0;
    $since = 0 if $since > length $c;
    return substr($c, $since);
}

# lines of error.log (since => $mark) matching a regex or containing a string
sub grep_error_log {
    my ($self, $pat, %o) = @_;
    my @l = split /\n/, $self->error_log(%o);
    return grep { ref $pat ? $_ =~ $pat : index($_, $pat) >= 0 } @l;
}

# poll error.log until a line matches; returns the line or undef
sub wait_for_log {
    my ($self, $pat, %o) = @_;
    my $deadline = Time::HiRes::time() + (defined $o{timeout} ? $o{timeout} : 3);
    while (1) {
        my @l = $self->grep_error_log($pat, since => $o{since});
        return $l[0] if @l;
        return undef if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.05);
    }
}

# ---------------------------------------------------------------------------
# nginx -t

# $t->nginx_t: test this instance's config.
# Test::Chat::Nginx->nginx_t(conf => ... | http => ..., server => ...):
# test a config in a throw-away servroot.
# Returns ($exit_code, $output) (scalar context: $exit_code).
sub nginx_t {
    my ($self, %o) = @_;
    if (ref $self) {
        my ($code, $out) = $self->_run('-t', '-q');
        return wantarray ? ($code, $out) : $code;
    }
    my $t = $self->new(%o, start => 0);
    my ($code, $out) = $t->_run('-t', '-q');
    $t->cleanup;
    return wantarray ? ($code, $out) : $code;
}

# ---------------------------------------------------------------------------
# clients

sub ws {
    my ($self, %o) = @_;
    require Test::Chat::WS;
    return Test::Chat::WS->connect(port => $self->{port}, timeout => 3, %o);
}

# raw HTTP exchange: http($request_bytes, timeout => 3) or
# http_get($path, headers => {...}).  Returns { status, headers (lower-case
# names), body, raw, timed_out, eof }.
sub http {
    my ($self, $req, %o) = @_;
    my $timeout = defined $o{timeout} ? $o{timeout} : 3;
    my $deadline = Time::HiRes::time() + $timeout;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $o{port} || $self->{port},
                                  Proto => 'tcp', Timeout => $timeout)
        or return { error => "connect: $!" };
    binmode $s;
    local $SIG{PIPE} = 'IGNORE';
    syswrite($s, $req);
    my $sel = IO::Select->new($s);
    my ($buf, $eof, $to) = ('', 0, 0);
    while (1) {
        my $left = $deadline - Time::HiRes::time();
        if ($left <= 0) { $to = 1; last }
        next unless $sel->can_read($left);
        my $n = sysread($s, my $c, 65536);
        if (!$n) { $eof = 1; last }
        $buf .= $c;
        last if _http_complete($buf);
    }
    close $s;
    my $r = _parse_http($buf);
    $r->{timed_out} = $to;
    $r->{eof} = $eof;
    return $r;
}

sub http_get {
    my ($self, $path, %o) = @_;
    my $h = $o{headers} || {};
    my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
            . join('', map { "$_: $h->{$_}\r\n" } sort keys %$h) . "\r\n";
    return $self->http($req, %o);
}

sub _http_complete {
    my $buf = shift;
    my $i = index($buf, "\r\n\r\n");
    return 0 if $i < 0;
    my $head = substr($buf, 0, $i);
    my $rest = length($buf) - $i - 4;
    return 1 if $head =~ m{^HTTP/\S+\s+(?:1\d\d|204|304)\b};
    return $rest >= $1 if $head =~ /^Content-Length:\s*(\d+)/mi;
    return substr($buf, $i + 4) =~ /(?:^|\r\n)0\r\n\r\n\z/ if $head =~ /^Transfer-Encoding:\s*chunked/mi;
    return 0;
}

sub _parse_http {
    my $buf = shift;
    my $r = { raw => $buf, headers => {}, body => '' };
    my $i = index($buf, "\r\n\r\n");
    return $r if $i < 0;
    my @l = split /\r\n/, substr($buf, 0, $i);
    my $sl = shift @l;
    ($r->{status}) = $sl =~ m{^HTTP/\S+\s+(\d+)};
    for (@l) {
        next unless /^([^:]+?)\s*:\s*(.*?)\s*$/;
        my $k = lc $1;
        $r->{headers}{$k} = defined $r->{headers}{$k} ? "$r->{headers}{$k}, $2" : $2;
    }
    my $body = substr($buf, $i + 4);
    if (($r->{headers}{'transfer-encoding'} || '') =~ /chunked/i) {
        my $out = '';
        while ($body =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0;
            $out .= substr($body, 0, $n);
            substr($body, 0, $n + 2, '');
        }
        $body = $out;
    } elsif (defined $r->{headers}{'content-length'}) {
        $body = substr($body, 0, $r->{headers}{'content-length'});
    }
    $r->{body} = $body;
    return $r;
}

# ---------------------------------------------------------------------------
# cleanup

sub cleanup {
    my $self = shift;
    $self->stop if $self->{running};
    return if $self->{keep} || $ENV{TEST_NGINX_NO_CLEAN};
    File::Path::remove_tree($self->{servroot}) if -d $self->{servroot};
}

sub _all_passing {
    return 1 unless $INC{'Test/Builder.pm'};
    my $tb = Test::Builder->new;
    return $tb->is_passing;
}

sub DESTROY {
    my $self = shift;
    return unless $$ == ($self->{owner} || 0);
    # once only: END calls it for every instance still alive, and perl
    # again at global destruction, when Test::Builder is gone ("Can't call
    # method "stack" on an undefined value" from _all_passing)
    return if $self->{destroyed}++;
    local ($?, $!, $@);
    $self->stop if $self->{running};
    if (!_all_passing()) {
        print STDERR "# nginx servroot kept for debugging: $self->{servroot}\n"
            if -d $self->{servroot} && !$self->{kept_notice}++;
        return;
    }
    $self->cleanup;
}

END {
    if ($$ == $OwnerPid) {
        local $?;
        for my $t (grep { defined } @Instances) {
            $t->DESTROY;
        }
    }
}

1;
