package Test::Chat::Redis;

# A private redis-server for tests: started on a free 127.0.0.1 port in a
# temporary directory, no persistence, optionally with a password.
#
#   use Test::Chat::Redis;
#
#   plan skip_all => 'no redis-server' unless Test::Chat::Redis->available;
#
#   my $r = Test::Chat::Redis->start;                       # free port
#   my $r = Test::Chat::Redis->start(password => 'secret'); # --requirepass
#
#   $r->port;  $r->pid;  $r->running;
#   $r->url;                          # "redis://127.0.0.1:P"
#   $r->url(password => 'x', user => 'default', db => 1)
#                                     # "redis://default:x@127.0.0.1:P/1"
#   my @lines = $r->cli('PUBSUB', 'CHANNELS');   # redis-cli output lines
#   my $out   = $r->cli('PING');                 # scalar: output, chomped
#   $r->kill;                         # SIGKILL (default) and wait until gone
#   $r->kill('TERM');
#   $r->start_again;                  # same port and options
#   $r->log;                          # the server log so far
#
# Only the process that started a server stops it (by its pid, never by
# name); it is stopped and its directory removed when the object goes
# away or at END (TEST_REDIS_KEEP=1 keeps the directory).
#
# Environment: TEST_REDIS_SERVER (default: redis-server from PATH, else
# /usr/bin/redis-server), TEST_REDIS_CLI (likewise redis-cli).

use strict;
use warnings;

use Carp qw(croak);
use File::Temp ();
use File::Path ();
use IO::Socket::INET ();
use IO::Select ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

our $VERSION = '0.01';

our $StartTimeout = 10;
our $StopTimeout  = 10;

my @Instances;      # weak refs, for END
my $OwnerPid = $$;

sub _which {
    my $name = shift;
    for my $dir (split /:/, $ENV{PATH} || '') {
        next unless length $dir;
        return "$dir/$name" if -f "$dir/$name" && -x _;
    }
    return -x "/usr/bin/$name" ? "/usr/bin/$name" : undef;
}

sub server_binary { $ENV{TEST_REDIS_SERVER} || _which('redis-server') }
sub cli_binary    { $ENV{TEST_REDIS_CLI}    || _which('redis-cli') }

# false when redis-server or redis-cli is missing: tests skip then
sub available {
    my $s = server_binary();
    my $c = cli_binary();
    return ($s && -x $s && $c && -x $c) ? 1 : 0;
}

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or croak "cannot find a free port: $!";
    my $p = $s->sockport;
    close $s;
    return $p;
}

sub _slurp {
    my $file = shift;
    open my $fh, '<', $file or return undef;
    local $/;
    my $c = <$fh>;
    close $fh;
    return defined $c ? $c : '';
}

sub _alive {
    my $pid = shift;
    return 0 unless $pid && CORE::kill(0, $pid);
    my $s = _slurp("/proc/$pid/stat");
    return 0 if defined $s && $s =~ /\)\s+Z\s/;
    return 1;
}

sub start {
    my ($class, %o) = @_;
    croak "redis-server not found" unless available();
    my $dir = File::Temp::tempdir('chat-redis-XXXXXX', TMPDIR => 1);
    my $self = bless {
        port     => $o{port} || free_port(),
        password => $o{password},
        dir      => $dir,
        owner    => $$,
        pid      => undef,
        extra    => $o{args} || [],
    }, ref($class) || $class;
    push @Instances, $self;
    Scalar::Util::weaken($Instances[-1]);
    $self->_launch or croak "redis-server did not start:\n" . $self->{start_error};
    return $self;
}

sub start_again {
    my $self = shift;
    croak "still running" if $self->running;
    return $self->_launch;
}

sub port     { $_[0]{port} }
sub pid      { $_[0]{pid} }
sub dir      { $_[0]{dir} }
sub password { $_[0]{password} }
sub pidfile  { "$_[0]{dir}/redis.pid" }
sub logfile  { "$_[0]{dir}/redis.log" }
sub log      { my $c = _slurp($_[0]->logfile); defined $c ? $c : '' }
sub running  { _alive($_[0]{pid}) }

sub url {
    my ($self, %o) = @_;
    my $cred = '';
    if (defined $o{password}) {
        $cred = (defined $o{user} ? $o{user} : '') . ":$o{password}@";
    }
    my $u = "redis://$cred" . "127.0.0.1:$self->{port}";
    $u .= "/$o{db}" if defined $o{db};
    return $u;
}

sub _launch {
    my $self = shift;
    unlink $self->pidfile;
    my @args = (
        '--port', $self->{port},
        '--bind', '127.0.0.1',
        '--dir', $self->{dir},
        '--save', '',
        '--appendonly', 'no',
        '--daemonize', 'yes',
        '--pidfile', $self->pidfile,
        '--logfile', $self->logfile,
        (defined $self->{password} ? ('--requirepass', $self->{password}) : ()),
        @{ $self->{extra} },
    );
    my $pid = fork;
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>>', "$self->{dir}/redis-start.stderr";
        exec server_binary(), @args
            or POSIX::_exit(127);
    }
    waitpid($pid, 0);    # the daemonizing parent exits at once
    my $deadline = Time::HiRes::time() + $StartTimeout;
    my $dpid;
    while (Time::HiRes::time() < $deadline) {
        my $c = _slurp($self->pidfile);
        ($dpid) = defined $c ? $c =~ /(\d+)/ : ();
        last if $dpid && _alive($dpid) && $self->_ping;
        Time::HiRes::sleep(0.02);
    }
    unless ($dpid && _alive($dpid) && $self->_ping) {
        my $err = _slurp("$self->{dir}/redis-start.stderr");
        $self->{start_error} = (defined $err ? $err : '') . $self->log;
        CORE::kill('KILL', $dpid) if $dpid && _alive($dpid);
        return 0;
    }
    $self->{pid} = $dpid;
    return 1;
}

# answers PING (PONG, or NOAUTH when a password is required)
sub _ping {
    my $self = shift;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $self->{port},
                                  Proto => 'tcp', Timeout => 1)
        or return 0;
    local $SIG{PIPE} = 'IGNORE';
    syswrite($s, "PING\r\n");
    my $buf = '';
    my $sel = IO::Select->new($s);
    while ($sel->can_read(1)) {
        my $n = sysread($s, $buf, 512, length $buf);
        last unless $n;
        last if $buf =~ /\r\n/;
    }
    close $s;
    return $buf =~ /^(?:\+PONG|-NOAUTH)/ ? 1 : 0;
}

# redis-cli -h 127.0.0.1 -p P [-a password] ARGS...; list context: lines
sub cli {
    my ($self, @args) = @_;
    my @cmd = (cli_binary(), '-h', '127.0.0.1', '-p', $self->{port});
    push @cmd, '--no-auth-warning', '-a', $self->{password} if defined $self->{password};
    my $pid = open(my $fh, '-|');
    croak "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open STDERR, '>&', \*STDOUT;
        exec @cmd, @args or POSIX::_exit(127);
    }
    local $/;
    my $out = <$fh>;
    close $fh;
    $out = '' unless defined $out;
    return split /\n/, $out if wantarray;
    chomp $out;
    return $out;
}

# stop the server with a signal (KILL by default) and wait until it is gone
sub kill {
    my ($self, $sig) = @_;
    return 1 unless $$ == $self->{owner};
    my $pid = $self->{pid};
    return 1 unless _alive($pid);
    CORE::kill($sig || 'KILL', $pid);
    my $deadline = Time::HiRes::time() + $StopTimeout;
    while (_alive($pid)) {
        if (Time::HiRes::time() > $deadline) {
            CORE::kill('KILL', $pid);
            Time::HiRes::sleep(0.1);
            last;
        }
        Time::HiRes::sleep(0.01);
    }
    return !_alive($pid);
}

sub stop { $_[0]->kill('TERM') }

sub DESTROY {
    my $self = shift;
    return unless $$ == ($self->{owner} || 0);
    local ($?, $!, $@);
    $self->kill('TERM');
    File::Path::remove_tree($self->{dir})
        if $self->{dir} && -d $self->{dir} && !$ENV{TEST_REDIS_KEEP};
    $self->{dir} = undef;
}

END {
    if ($$ == $OwnerPid) {
        local $?;
        for my $r (grep { defined } @Instances) {
            $r->DESTROY;
        }
    }
}

1;
