'use strict';
// bench/cbmerge.js A.json B.json ... > MERGED.json
// One run of a split load generator: several chatbench processes (bench/compare
// GEN_PROCS) started together (--barrier), each printing its --json
// --json-buckets line; this merges them into one line of chatbench's own
// schema, so everything that reads chatbench's JSON reads a merged run too:
//
//   counts           summed (connections, sends, acks, deliveries, errors...)
//   histograms       bucket counts summed (latency_hist/ack_hist), percentiles
//                    taken from the merged buckets exactly as chatbench's
//                    h_quantile does: never an average of percentiles
//   expected         disjoint rooms (every process a sender, W2): summed;
//                    shared rooms (processes with --recv-only, W1): each
//                    sending process's expected scaled by all joined members
//                    over its own (it only counts the members it holds)
//   deliveries/s     all received over the longest send-to-last-delivery span
//   server CPU       from the process with the longest measured window
//   load generator   client_cpu_s = the sum; gen = each process's CPU and
//                    share of a core; gen_max_core_pct = the busiest one
//
// Also usable as a module: require('./cbmerge').merge([obj, ...]).

const fs = require('node:fs');

const SUMS = ['conns', 'opened', 'connect_failed', 'handshake_failed', 'timeouts',
  'joined', 'join_failed', 'closed_after_open', 'sent', 'acks', 'refused',
  'received', 'dup_or_reorder', 'dup', 'reordered', 'gaps', 'foreign',
  'bad_content', 'presence', 'other', 'pings', 'protocol_errors',
  'skipped_backpressure', 'ramp_client_cpu_s', 'client_cpu_s'];

// chatbench's h_quantile over [value_ns, count] pairs sorted by value
function quantile(pairs, n, min, max, q) {
  if (!n) return 0;
  let rank = Math.floor(q * n);
  if (rank < q * n) rank++;
  if (rank === 0) rank = 1;
  let acc = 0;
  for (const [v, c] of pairs) {
    acc += c;
    if (acc >= rank) return Math.min(Math.max(v, min), max);
  }
  return max;
}

function mergeHist(hs) {
  hs = hs.filter((h) => h && h.n > 0);
  const m = new Map();
  let n = 0, sum = 0, min = Infinity, max = 0;
  for (const h of hs) {
    for (const [v, c] of h.b) m.set(v, (m.get(v) || 0) + c);
    n += h.n; sum += h.sum_ns;
    min = Math.min(min, h.min_ns); max = Math.max(max, h.max_ns);
  }
  const pairs = [...m.entries()].sort((a, b) => a[0] - b[0]);
  if (!n) min = 0;
  const ms = (ns) => Math.round(ns / 1e3) / 1e3;
  return {
    hist: { n, min_ns: min, max_ns: max, sum_ns: sum, b: pairs },
    ms: {
      n,
      p50: ms(quantile(pairs, n, min, max, 0.5)),
      p90: ms(quantile(pairs, n, min, max, 0.9)),
      p99: ms(quantile(pairs, n, min, max, 0.99)),
      p999: ms(quantile(pairs, n, min, max, 0.999)),
      max: ms(max),
      mean: n ? ms(sum / n) : 0,
    },
  };
}

function mergeKv(objs) {
  const o = {};
  for (const x of objs) for (const [k, v] of Object.entries(x || {})) o[k] = (o[k] || 0) + v;
  return o;
}

function merge(parts) {
  parts = parts.filter(Boolean);
  if (!parts.length) return null;
  if (parts.length === 1 && !parts[0].recv_only) {
    const p = parts[0];
    const core = p.measured_s > 0 ? 100 * p.client_cpu_s / p.measured_s : null;
    return { ...p, gen_procs: 1, gen: [{ pid: p.pid, recv_only: 0, conns: p.conns, client_cpu_s: p.client_cpu_s, measured_s: p.measured_s, core_pct: core }], gen_max_core_pct: core };
  }
  for (const p of parts) {
    if (!p.latency_hist) throw new Error('cbmerge: a part has no latency_hist (run chatbench with --json-buckets)');
  }
  const senders = parts.filter((p) => !p.recv_only);
  const first = senders[0] || parts[0];
  const shared = parts.some((p) => p.recv_only);
  const r = {};
  for (const k of Object.keys(first)) r[k] = first[k];
  for (const k of SUMS) r[k] = parts.reduce((a, p) => a + (p[k] || 0), 0);
  r.rooms = shared ? Math.max(...parts.map((p) => p.rooms)) : parts.reduce((a, p) => a + p.rooms, 0);
  r.senders = shared ? first.senders : senders.reduce((a, p) => a + p.senders, 0);

  if (shared) {
    const e = senders.reduce((a, p) => a + (p.joined > 0 ? p.expected * r.joined / p.joined : 0), 0);
    r.expected = Math.round(e);
  } else {
    r.expected = parts.reduce((a, p) => a + p.expected, 0);
  }
  r.lost = Math.max(0, r.expected - r.received);

  // the longest measured window: its server CPU, memory and machine figures
  const L = parts.reduce((a, p) => (p.measured_s > a.measured_s ? p : a), parts[0]);
  for (const k of ['measured_s', 'server_cpu_s', 'irq_cpu_s', 'server_mem_kb',
    'server_kb_per_conn', 'ramp_server_cpu_s', 'send_s', 'max_behind_ms']) {
    r[k] = L[k];
  }
  r.send_s = Math.max(...parts.map((p) => p.send_s || 0));
  r.max_behind_ms = Math.max(...parts.map((p) => p.max_behind_ms || 0));
  r.ramp_s = Math.max(...parts.map((p) => p.ramp_s || 0));
  const hs = Math.max(...parts.map((p) => (p.connect_rate > 0 ? p.opened / p.connect_rate : 0)), 0);
  r.connect_rate = hs > 0 ? r.opened / hs : 0;

  // "other" processes as each part saw them include the other generator
  // processes: take L's and remove theirs (scaled to L's window)
  if (L.other_cpu_s >= 0) {
    const gens = parts.filter((p) => p !== L)
      .reduce((a, p) => a + p.client_cpu_s * Math.min(1, p.measured_s > 0 ? L.measured_s / p.measured_s : 1), 0);
    r.other_cpu_s = Math.max(0, L.other_cpu_s - gens);
  }

  const dwin = Math.max(...parts.map((p) => (p.deliveries_per_s > 0 ? p.received / p.deliveries_per_s : 0)), 0);
  r.deliveries_per_s = dwin > 0 ? r.received / dwin : 0;
  r.deliveries_per_server_cpu_s = r.server_cpu_s > 0 ? r.received / r.server_cpu_s : 0;

  const lat = mergeHist(parts.map((p) => p.latency_hist));
  const ack = mergeHist(parts.map((p) => p.ack_hist));
  r.latency_ms = lat.ms; r.latency_hist = lat.hist;
  r.ack_ms = ack.ms; r.ack_hist = ack.hist;
  r.failures = mergeKv(parts.map((p) => p.failures));
  r.errors = mergeKv(parts.map((p) => p.errors));
  r.closes = mergeKv(parts.map((p) => p.closes));
  r.recv_only = 0;
  delete r.pid;

  r.gen_procs = parts.length;
  r.gen = parts.map((p) => ({
    pid: p.pid, recv_only: p.recv_only, conns: p.conns, senders: p.recv_only ? 0 : p.senders,
    received: p.received, client_cpu_s: p.client_cpu_s, measured_s: p.measured_s,
    core_pct: p.measured_s > 0 ? 100 * p.client_cpu_s / p.measured_s : null,
  }));
  r.gen_max_core_pct = Math.max(...r.gen.map((g) => g.core_pct || 0));
  return r;
}

module.exports = { merge, mergeHist, quantile };

if (require.main === module) {
  const parts = process.argv.slice(2).map((f) => {
    const t = fs.readFileSync(f, 'utf8').trim();
    return t ? JSON.parse(t) : null;
  });
  const r = merge(parts);
  process.stdout.write(`${JSON.stringify(r)}\n`);
}
