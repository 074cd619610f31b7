package Test::Chat::Pg;

# A private PostgreSQL server for tests: initdb in a temporary directory,
# started on a free loopback port with its own unix socket directory, a
# role "chat" with a password and a database "chat" owned by it.
#
#   use Test::Chat::Pg;
#
#   plan skip_all => 'no PostgreSQL server binaries'
#       unless Test::Chat::Pg->available;
#
#   my $pg = Test::Chat::Pg->start(password => 'secret');
#   my $pg = Test::Chat::Pg->start(password => 'secret', ssl => 1);
#   my $pg = Test::Chat::Pg->start(settings =>     # more server settings
#                                  { track_commit_timestamp => 'on' });
#
#   $pg->ssl;                # TLS on (a self-signed certificate), if asked
#                            # and openssl was there; clients choose with
#                            # sslmode= (libpq's default "prefer" uses it)
#   $pg->port;               # the TCP port on 127.0.0.1
#   $pg->socket_dir;         # the unix socket directory
#   $pg->conninfo;           # "host=127.0.0.1 port=P dbname=chat user=chat
#                            #  password=secret"
#   $pg->conninfo(password => 'wrong', dbname => 'x');   # with changes
#   $pg->directive;          # 'chat_postgres "CONNINFO";' for nginx.conf
#   $pg->directive(%changes);    # of conninfo(%changes)
#   $pg->wait_up($t, 2);     # true once nginx $t (Test::Chat::Nginx) has
#                            # logged 2 connections "is up" (two per
#                            # worker: stores, reads), within 15 s
#   my @rows = $pg->psql('SELECT 1, 2');   # ("1|2"), psql -At output lines
#   my $out = $pg->psql($sql);             # scalar: the output, chomped
#   $pg->psql($sql, db => 'postgres');     # another database
#   $pg->stop;               # fast shutdown (pg_ctl stop -m fast)
#   $pg->start_again;        # the same data directory and port
#   $pg->running;
#   $pg->log;                # the server log so far
#
# Everything runs as the "postgres" user when we are root (runuser -u
# postgres), as ourselves otherwise.  psql connects as the superuser
# through the socket (peer authentication); TCP connections need a
# password (scram-sha-256), and so do unix socket connections of every
# other role.  The server is stopped and the directory removed when the
# object goes away or at END, only by the process that started it
# (TEST_PG_KEEP=1 keeps the directory).
#
# Environment: TEST_PG_BINDIR (default: the newest
# /usr/lib/postgresql/*/bin with an initdb).

use strict;
use warnings;

use Carp qw(croak);
use File::Temp ();
use File::Path ();
use IO::Socket::INET ();
use POSIX ();
use Scalar::Util ();
use Time::HiRes ();

our $VERSION = '0.01';

my @Instances;      # weak refs, for END

sub bindir {
    my ($class) = @_;

    if ($ENV{TEST_PG_BINDIR}) {
        return -x "$ENV{TEST_PG_BINDIR}/initdb" ? $ENV{TEST_PG_BINDIR} : undef;
    }

    my @dirs = sort {
        my ($x) = $a =~ m{/postgresql/(\d+)/};
        my ($y) = $b =~ m{/postgresql/(\d+)/};
        ($y // 0) <=> ($x // 0)
    } grep { -x "$_/initdb" && -x "$_/pg_ctl" }
      glob('/usr/lib/postgresql/*/bin');

    return $dirs[0];
}

# false when the server binaries (or, as root, the postgres user) are
# missing: tests skip then
sub available {
    my ($class) = @_;

    my $bindir = $class->bindir;

    return 0 unless defined $bindir;
    return 0 unless -x "$bindir/psql" || _which('psql');

    if ($> == 0) {
        return 0 unless defined getpwnam('postgres');
        return 0 unless _which('runuser');
    }

    return 1;
}

sub _which {
    my ($name) = @_;

    for my $dir (split /:/, $ENV{PATH} || '/usr/sbin:/usr/bin:/sbin:/bin') {
        return "$dir/$name" if length $dir && -x "$dir/$name";
    }

    for my $dir (qw(/usr/sbin /usr/bin /sbin /bin)) {
        return "$dir/$name" if -x "$dir/$name";
    }

    return undef;
}

sub _free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
                                  Proto => 'tcp', Listen => 1, ReuseAddr => 1)
        or croak "no free port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

sub _quote_literal {
    my ($s) = @_;
    $s =~ s/'/''/g;
    return "'$s'";
}

sub _quote_ident {
    my ($s) = @_;
    $s =~ s/"/""/g;
    return qq{"$s"};
}

# a conninfo value, quoted when needed
sub _conninfo_value {
    my ($v) = @_;
    return $v if length $v && $v !~ /[\s'\\]/;
    $v =~ s/([\\'])/\\$1/g;
    return "'$v'";
}

# runs a command as the postgres user (or ourselves); returns (status,
# output) with stderr merged into the output unless $opt->{stderr} is 0
sub _run {
    my ($self, $opt, @cmd) = @_;

    unshift @cmd, 'runuser', '-u', 'postgres', '--' if $> == 0;

    my $pid = open(my $fh, '-|');
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        chdir($self->{dir} // '/');
        open STDIN, '<', '/dev/null';

        if (!defined $opt->{stderr} || $opt->{stderr}) {
            open STDERR, '>&', \*STDOUT;

        } else {
            open STDERR, '>', '/dev/null';
        }

        # no client settings of ours, no sanitizer of a test run
        delete @ENV{qw(PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE
                       PGPASSWORD PGSERVICE PGOPTIONS PGSSLMODE
                       LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS)};
        { exec @cmd; }
        POSIX::_exit(127);
    }

    local $/;
    my $out = <$fh>;
    close $fh;

    return ($? >> 8, $out // '');
}

sub start {
    my ($class, %o) = @_;

    my $bindir = $class->bindir
        or croak 'no PostgreSQL server binaries (/usr/lib/postgresql/*/bin)';

    my $self = bless {
        bindir   => $bindir,
        password => defined $o{password} ? $o{password} : 'secret',
        user     => $o{user} || 'chat',
        dbname   => $o{dbname} || 'chat',
        port     => $o{port} || _free_port(),
        owner    => $$,
        running  => 0,
        keep     => $ENV{TEST_PG_KEEP} ? 1 : 0,
        ssl      => 0,
        settings => $o{settings} || {},
    }, ref($class) || $class;

    $self->{dir} = File::Temp::tempdir('chat-pg-XXXXXX', TMPDIR => 1,
                                       CLEANUP => 0);
    $self->{data} = "$self->{dir}/data";
    $self->{socket_dir} = "$self->{dir}/sock";
    $self->{logfile} = "$self->{dir}/postgres.log";

    mkdir $self->{socket_dir} or croak "mkdir $self->{socket_dir}: $!";

    # the server runs as postgres: the directory is its own; nginx workers
    # (nobody) may reach the socket, which wants a password
    chmod 0755, $self->{dir}, $self->{socket_dir};

    if ($> == 0) {
        my $uid = getpwnam('postgres');
        my $gid = (getpwnam('postgres'))[3];
        chown $uid, $gid, $self->{dir}, $self->{socket_dir}
            or croak "chown $self->{dir}: $!";
    }

    push @Instances, $self;
    Scalar::Util::weaken($Instances[-1]);

    my ($rc, $out) = $self->_run({}, "$bindir/initdb", '-D', $self->{data},
                                 '-U', 'postgres', '-E', 'UTF8',
                                 '--locale=C', '--auth-local=peer',
                                 '--auth-host=scram-sha-256', '--no-sync');
    croak "initdb failed ($rc):\n$out" if $rc;

    $self->_write_hba;
    $self->_make_cert if $o{ssl};

    $self->_pg_ctl_start
        or croak "PostgreSQL did not start:\n" . $self->log;

    my $role = _quote_ident($self->{user});
    my $db = _quote_ident($self->{dbname});

    $self->psql("CREATE ROLE $role LOGIN PASSWORD "
                . _quote_literal($self->{password}), db => 'postgres');
    $self->psql("CREATE DATABASE $db OWNER $role", db => 'postgres');

    return $self;
}

sub _write_hba {
    my ($self) = @_;

    # the superuser through the socket by peer (psql here); everybody else
    # with a password, over TCP and the socket alike
    my $hba = <<'EOF';
# written by Test::Chat::Pg
local   all   postgres                  peer
local   all   all                       scram-sha-256
host    all   all       127.0.0.1/32    scram-sha-256
EOF

    my $file = "$self->{data}/pg_hba.conf";
    my $tmp = "$self->{dir}/pg_hba.conf";

    open my $fh, '>', $tmp or croak "$tmp: $!";
    print $fh $hba;
    close $fh or croak "$tmp: $!";

    # as postgres: the data directory is not ours to write when root
    my ($rc, $out) = $self->_run({}, 'cp', $tmp, $file);
    croak "cannot write $file: $out" if $rc;
    unlink $tmp;
}

# a self-signed certificate for TLS; without openssl, no TLS
sub _make_cert {
    my ($self) = @_;

    my $openssl = _which('openssl') or return;
    my ($crt, $key) = ("$self->{dir}/server.crt", "$self->{dir}/server.key");

    my $pid = fork;
    croak "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', '/dev/null';
        delete @ENV{qw(LD_PRELOAD ASAN_OPTIONS UBSAN_OPTIONS)};
        { exec $openssl, 'req', '-new', '-x509', '-days', '2', '-nodes',
               '-subj', '/CN=127.0.0.1', '-newkey', 'rsa:2048',
               '-keyout', $key, '-out', $crt; }
        POSIX::_exit(127);
    }

    waitpid $pid, 0;
    return if $? || !-s $crt || !-s $key;

    chmod 0600, $key;

    if ($> == 0) {
        my ($uid, $gid) = (getpwnam('postgres'))[2, 3];
        chown $uid, $gid, $crt, $key;
    }

    $self->{ssl} = 1;
}

sub _pg_ctl_start {
    my ($self) = @_;

    my $opts = join ' ', "-p $self->{port}", "-k $self->{socket_dir}",
        '-c listen_addresses=127.0.0.1', '-c fsync=off',
        '-c synchronous_commit=off', '-c full_page_writes=off',
        '-c max_connections=100', '-c log_min_messages=warning',
        '-c log_connections=off',
        (map { "-c $_=$self->{settings}{$_}" }
             sort keys %{ $self->{settings} }),
        $self->{ssl} ? ('-c ssl=on', "-c ssl_cert_file=$self->{dir}/server.crt",
                        "-c ssl_key_file=$self->{dir}/server.key")
                     : ();

    my ($rc, $out) = $self->_run({}, "$self->{bindir}/pg_ctl", '-D',
                                 $self->{data}, '-l', $self->{logfile},
                                 '-w', '-t', '60', '-o', $opts, 'start');
    if ($rc) {
        $self->{start_output} = $out;
        return 0;
    }

    $self->{running} = 1;
    return 1;
}

sub start_again {
    my ($self) = @_;

    croak 'already running' if $self->{running};
    $self->_pg_ctl_start
        or croak "PostgreSQL did not start again:\n"
                 . ($self->{start_output} // '') . $self->log;
    return $self;
}

sub stop {
    my ($self, %o) = @_;

    return $self unless $self->{running};

    my $mode = $o{mode} || 'fast';
    my ($rc, $out) = $self->_run({}, "$self->{bindir}/pg_ctl", '-D',
                                 $self->{data}, '-m', $mode, '-w', '-t',
                                 '60', 'stop');
    if ($rc) {
        ($rc, $out) = $self->_run({}, "$self->{bindir}/pg_ctl", '-D',
                                  $self->{data}, '-m', 'immediate', '-w',
                                  'stop');
    }

    $self->{running} = 0;
    return $self;
}

sub running { $_[0]{running} }
sub ssl { $_[0]{ssl} }
sub port { $_[0]{port} }
sub socket_dir { $_[0]{socket_dir} }
sub dir { $_[0]{dir} }
sub data_dir { $_[0]{data} }
sub password { $_[0]{password} }
sub user { $_[0]{user} }
sub dbname { $_[0]{dbname} }

sub conninfo {
    my ($self, %o) = @_;

    my %c = (host => '127.0.0.1', port => $self->{port},
             dbname => $self->{dbname}, user => $self->{user},
             password => $self->{password}, %o);

    my @order = grep { exists $c{$_} && defined $c{$_} }
                (qw(host hostaddr port dbname user password),
                 sort grep { !/^(host|hostaddr|port|dbname|user|password)$/ }
                      keys %c);

    return join ' ', map { "$_=" . _conninfo_value($c{$_}) } @order;
}

# the chat_postgres directive of conninfo(%o), quoted for nginx.conf
sub directive {
    my ($self, %o) = @_;

    (my $q = $self->conninfo(%o)) =~ s/(["\\])/\\$1/g;

    return qq{chat_postgres "$q";};
}

# waits until nginx $t has logged $n PostgreSQL connections up, $timeout
# seconds at most (15); returns whether it has
sub wait_up {
    my ($self, $t, $n, $timeout) = @_;

    my $deadline = Time::HiRes::time() + ($timeout || 15);

    while (1) {
        my @l = $t->grep_error_log(qr/chat postgres: .* is up/);
        return 1 if @l >= $n;
        return 0 if Time::HiRes::time() > $deadline;
        Time::HiRes::sleep(0.05);
    }
}

# psql -At as the superuser through the socket; list context: the output
# lines, scalar context: the output chomped; dies on an SQL error
sub psql {
    my ($self, $sql, %o) = @_;

    my $psql = -x "$self->{bindir}/psql" ? "$self->{bindir}/psql" : 'psql';

    my ($rc, $out) = $self->_run({ stderr => 1 }, $psql, '-X', '-q', '-At',
                                 '-v', 'ON_ERROR_STOP=1',
                                 '-h', $self->{socket_dir},
                                 '-p', $self->{port}, '-U', 'postgres',
                                 '-d', $o{db} || $self->{dbname},
                                 '-c', $sql);
    croak "psql failed ($rc): $sql\n$out" if $rc;

    return wantarray ? split(/\n/, $out) : do { chomp $out; $out };
}

sub log {
    my ($self) = @_;

    open my $fh, '<', $self->{logfile} or return '';
    local $/;
    my $log = <$fh>;
    return $log // '';
}

sub cleanup {
    my ($self) = @_;

    return if !$self->{dir} || $self->{owner} != $$ || $self->{cleaned};
    $self->{cleaned} = 1;

    local ($?, $!, $@);

    $self->stop if $self->{running};

    if ($self->{keep}) {
        print STDERR "# Test::Chat::Pg: kept $self->{dir}\n";
        return;
    }

    File::Path::remove_tree($self->{dir});
}

sub DESTROY {
    my ($self) = @_;
    $self->cleanup;
}

END {
    for my $pg (@Instances) {
        $pg->cleanup if defined $pg;
    }
}

1;
