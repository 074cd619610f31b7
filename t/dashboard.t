# conf-examples/grafana-dashboard.json (issue 15): a Grafana dashboard JSON
# model that parses, has the expected panels, each with a Prometheus query,
# and whose PromQL names only metrics the module exports (read from a real
# nginx's chat_status?format=prometheus); conf-examples/prometheus.yml
# scrapes that path with format=prometheus.

use strict;
use warnings;

use Test::More;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();

use Test::Chat::Nginx;

plan tests => 17;

my $root = "$FindBin::Bin/..";

sub slurp {
    my $f = shift;
    open my $fh, '<', $f or die "$f: $!";
    local $/;
    return scalar <$fh>;
}

my $d = eval { JSON::PP->new->decode(slurp("$root/conf-examples/grafana-dashboard.json")) };
ok(ref $d eq 'HASH', 'the dashboard parses as a JSON object') or diag($@);
$d ||= {};

ok(defined $d->{title} && defined $d->{uid} && ($d->{schemaVersion} // 0) >= 30,
   'title, uid and a schemaVersion Grafana 9+ reads');

my @panels = @{ $d->{panels} || [] };
my %ids;
my @bad = grep {
    my $p = $_;
    !(defined $p->{id} && !$ids{ $p->{id} }++ && $p->{type} && $p->{title}
      && ref $p->{gridPos} eq 'HASH'
      && 4 == grep({ defined $p->{gridPos}{$_} } qw(h w x y))
      && ref $p->{targets} eq 'ARRAY' && @{ $p->{targets} }
      && !grep({ !defined $_->{expr} || !defined $_->{refId} } @{ $p->{targets} }))
} @panels;
is(scalar @bad, 0, 'every panel has a unique id, type, title, gridPos, targets')
    or diag(join ', ', map { $_->{title} // '?' } @bad);

my %title = map { $_->{title} => $_ } @panels;
for my $want ('Connections', 'Messages in / out rate', 'Delivery lag p50 / p99',
              'Ack latency p50 / p99 (PostgreSQL)', 'Errors by code',
              'Closes by code', 'Redis up', 'PostgreSQL up')
{
    ok($title{$want}, "panel \"$want\"");
}

my @exprs = map { my $p = $_; map { [ $p->{title}, $_->{expr} ] } @{ $p->{targets} } } @panels;
my %var = map { $_->{name} => 1 } @{ $d->{templating}{list} || [] };

# the quantiles come from the histograms
ok((grep { $_->[1] =~ /histogram_quantile\(0\.99,.*chat_delivery_lag_seconds_bucket/ } @exprs)
   && (grep { $_->[1] =~ /histogram_quantile\(0\.5,.*chat_delivery_lag_seconds_bucket/ } @exprs)
   && (grep { $_->[1] =~ /histogram_quantile\(0\.99,.*chat_ack_latency_seconds_bucket/ } @exprs),
   'p50/p99 by histogram_quantile over the _bucket series');

# --- every metric a query names is exported ------------------------------------

my $t = Test::Chat::Nginx->new(port => 28110, workers => 1,
    http => 'chat_zone chat 1m;',
    server => <<'_EOC_');
        location = /chat { chat chat; chat_user $arg_user; }
        location = /chat/status { chat_status chat; }
_EOC_

my $body = $t->http_get('/chat/status?format=prometheus')->{body} // '';
my %exported = map { /^([a-zA-Z_:][a-zA-Z0-9_:]*)/ ? ($1 => 1) : () }
               grep { !/^#/ && /\S/ } split /\n/, $body;

my %keyword = map { $_ => 1 } qw(by without on ignoring group_left
    group_right and or unless bool offset sum min max avg count stddev
    stdvar topk bottomk quantile count_values group);
my (@unknown, @vars, %used);

for my $e (@exprs) {
    my ($title, $q) = @$e;
    my $s = $q;
    push @vars, grep { !$var{$_} && !/^__/ } $s =~ /\$(\w+)/g;
    $s =~ s/"(?:[^"\\]|\\.)*"//g;              # strings
    $s =~ s/\{[^}]*\}//g;                        # label matchers
    $s =~ s/\[[^\]]*\]//g;                       # ranges
    $s =~ s/\b(?:by|without|on|ignoring)\s*\([^)]*\)//g;   # label lists
    while ($s =~ /([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g) {
        my ($name, $call) = ($1, $2);
        next if $call || $keyword{$name};
        $used{$name}++;
        push @unknown, "$title: $name" unless $exported{$name};
    }
}

ok(keys %exported > 20, 'the module exports its metrics') or diag($body);
ok(keys %used >= 10, 'the queries name ' . scalar(keys %used) . ' metrics');
is_deeply(\@unknown, [], 'every metric the dashboard names is exported by chat_status');
is_deeply(\@vars, [], 'every $variable is a templating variable or a Grafana built-in');

# --- the scrape example ----------------------------------------------------------

my $yml = slurp("$root/conf-examples/prometheus.yml");
ok($yml =~ m{^\s*metrics_path:\s*/chat/status\s*$}m
   && $yml =~ m{^\s*format:\s*\[\s*prometheus\s*\]\s*$}m
   && $yml =~ m{^scrape_configs:}m,
   'prometheus.yml scrapes /chat/status?format=prometheus');

$t->stop;
