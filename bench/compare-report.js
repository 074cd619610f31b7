'use strict';
// bench/compare-report.js RESULTS.jsonl > RESULTS.md
// Turns the records bench/compare wrote (one JSON object a line: "meta",
// "run" with chatbench's --json output, "skip", "died", "errors") into the
// markdown report: a summary with ngx_chat's ratio to each system, then one
// table per workload, the "limited by" reading, versions and commands.

const fs = require('node:fs');

const lines = fs.readFileSync(process.argv[2], 'utf8').split('\n').filter(Boolean);
const recs = lines.map((l) => JSON.parse(l));
// PIN=both (bench/compare): every system measured twice; the pinned runs
// (server on one core, load generator on the other) are "<system> (pinned)"
const PINNED = ' (pinned)';
for (const r of recs) if (r.system && r.pin === 'pinned') r.system += PINNED;
const modeOf = (sys) => (sys.endsWith(PINNED) ? 'pinned' : 'shared');
const baseOf = (sys) => (sys.endsWith(PINNED) ? sys.slice(0, -PINNED.length) : sys);
const meta = recs.find((r) => r.kind === 'meta') || {};
const runs = recs.filter((r) => r.kind === 'run');
const skips = recs.filter((r) => r.kind === 'skip');
const died = recs.filter((r) => r.kind === 'died');
const errs = recs.filter((r) => r.kind === 'errors');

const order = ['ngx_chat', 'ngx_chat+pg', 'uws', 'nchan', 'socketio', 'socketio+redis+pg'];
const rank = (sys) => (order.indexOf(baseOf(sys)) + 99) % 99 + (modeOf(sys) === 'pinned' ? 100 : 0);
const systems = [...new Set(runs.map((r) => r.system))].sort((a, b) => rank(a) - rank(b));
const OURS = 'ngx_chat';

const out = [];
const p = (s = '') => out.push(s);

// ---- formatting ----
const fmt = (v, d = 0) => (v == null || Number.isNaN(v) ? '–'
  : Number(v).toLocaleString('en-US', { minimumFractionDigits: d, maximumFractionDigits: d }));
const ms = (v) => (v == null ? '–' : v < 1 ? fmt(v, 2) : v < 10 ? fmt(v, 1) : fmt(v, 0));
const pct = (v) => (v == null ? '–' : `${fmt(v, v >= 99.9 && v < 100 ? 2 : 1)} %`);
const core = (cpu, s) => (s > 0 && cpu != null ? 100 * cpu / s : null);
const corePct = (v) => (v == null ? '–' : `${fmt(v, 0)} %`);

// ---- per run figures ----
function fig(r) {
  if (!r) return null;
  const s = r.measured_s;
  return {
    sent: r.sent,
    expected: r.expected,
    received: r.received,
    delivered: r.expected ? 100 * r.received / r.expected : null,
    dps: r.deliveries_per_s,
    p50: r.latency_ms.p50, p90: r.latency_ms.p90, p99: r.latency_ms.p99,
    p999: r.latency_ms.p999, max: r.latency_ms.max,
    ack99: r.ack_ms.n ? r.ack_ms.p99 : null,
    perCpu: r.deliveries_per_server_cpu_s,
    srv: core(r.server_cpu_s, s),
    cli: core(r.client_cpu_s, s),
    other: r.other_cpu_s >= 0 ? core(r.other_cpu_s, s) : null,
    irq: core(r.irq_cpu_s, s),
    opened: r.opened, joined: r.joined, conns: r.conns,
    closes: r.closes, errors: r.errors, failures: r.failures,
    skipped: r.skipped_backpressure,
    dup: r.dup != null ? r.dup : r.dup_or_reorder, reord: r.reordered || 0,
    // load generator processes (bench/cbmerge.js): the busiest one's share
    genN: r.gen_procs || 1,
    genMax: r.gen_max_core_pct != null ? r.gen_max_core_pct : core(r.client_cpu_s, s),
  };
}

// a load generator process above this share of a core may have been the
// limit: such rows get a ⚠ and a footnote
const GEN_WARN = 70;
const warned = [];
function genCell(f, where) {
  if (!f || f.cli == null) return '–';
  const warn = f.genMax != null && f.genMax > GEN_WARN;
  if (warn) warned.push(`${where}: ${fmt(f.genMax, 0)} %`);
  const busiest = f.genN > 1 ? ` (${f.genN} proc., max ${fmt(f.genMax, 0)} %)` : '';
  return `${corePct(f.cli)}${busiest}${warn ? ' ⚠' : ''}`;
}

const singleProcess = (sys) => baseOf(sys).startsWith('socketio') && Number(meta.sio_workers || 1) === 1;

// which resource ran out first, from the CPU shares (a heuristic)
function limit(sys, f) {
  if (!f) return '–';
  const why = [];
  const pinned = modeOf(sys) === 'pinned';
  if (f.genMax != null && f.genMax > 85) why.push(`load generator (a process at ${fmt(f.genMax, 0)} % of a core)`);
  else if (pinned && f.cli != null && f.cli > 85) why.push(`load generator's core (${fmt(f.cli, 0)} %)`);
  if ((singleProcess(sys) || baseOf(sys) === 'uws') && f.srv != null && f.srv > 85) why.push('server (1 process = 1 core)');
  else if (pinned && f.srv != null && f.srv > 85) why.push(`server's core (pinned, ${fmt(f.srv, 0)} %)`);
  const ours = (f.srv || 0) + (f.cli || 0) + (f.irq || 0);
  if (!why.length && !pinned && ours > 170) why.push(`the 2 cores (server + load generator + softirq ${fmt(ours, 0)} %)`);
  if (!why.length) why.push('neither (not saturated)');
  if (f.other != null && f.other > 10) why.push(`disturbed: other processes used ${fmt(f.other, 0)} % of a core`);
  return why.join('; ');
}

const OK_DELIVERED = 99.9;
const OK_P99 = 50;
const passes = (f) => f && f.delivered != null && f.delivered >= OK_DELIVERED && f.p99 < OK_P99;

// ---- collect per system ----
const S = {};
for (const sys of systems) {
  const w1 = runs.filter((r) => r.system === sys && r.workload === 'W1')
    .map((r) => ({ rate: r.rate, f: fig(r.result), cmd: r.cmd }));
  const w2r = runs.find((r) => r.system === sys && r.workload === 'W2');
  const w3r = runs.find((r) => r.system === sys && r.workload === 'W3');
  const ok = w1.filter((x) => passes(x.f));
  const best = ok.reduce((a, x) => (!a || x.f.dps > a.f.dps ? x : a), null);
  const unl = w1.find((x) => Number(x.rate) === 0);
  let w3 = null;
  if (w3r) {
    const rs = (w3r.results || []).filter(Boolean);
    const joined = rs.reduce((a, x) => a + x.joined, 0);
    const opened = rs.reduce((a, x) => a + x.opened, 0);
    const failed = rs.reduce((a, x) => a + x.connect_failed + x.handshake_failed + x.join_failed, 0);
    // the processes start together: aggregate rate = all opened / slowest
    const hs = Math.max(...rs.map((x) => (x.connect_rate > 0 ? x.opened / x.connect_rate : 0)), 0);
    const cliRamp = rs.reduce((a, x) => a + x.ramp_client_cpu_s, 0);
    const genMax = Math.max(...rs.map((x) => (x.ramp_s > 0 ? 100 * x.ramp_client_cpu_s / x.ramp_s : 0)), 0);
    const failures = {};
    for (const x of rs) for (const [k, v] of Object.entries(x.failures || {})) failures[k] = (failures[k] || 0) + v;
    w3 = {
      target: w3r.target, joined, opened, failed, failures,
      rate: hs > 0 ? opened / hs : null,
      ramp: w3r.ramp_wall_s,
      kb: joined > 0 ? (w3r.mem1_kb - w3r.mem0_kb) / joined : null,
      mem0: w3r.mem0_kb / 1024, mem1: w3r.mem1_kb / 1024,
      usPerConn: opened > 0 ? 1e6 * w3r.ramp_server_cpu_s / opened : null,
      srv: core(w3r.ramp_server_cpu_s, w3r.ramp_wall_s),
      cli: core(cliRamp, w3r.ramp_wall_s),
      genN: rs.length, genMax,
      cmd: w3r.cmd,
    };
  }
  S[sys] = { w1, best, unl, w2: w2r ? fig(w2r.result) : null, w2cmd: w2r && w2r.cmd, w3 };
}

// ---- header ----
p(`# chatbench compare: ngx_chat_module vs ${systems.some((s) => baseOf(s) === 'uws') ? 'uWebSockets.js vs ' : ''}nchan vs Socket.io (${meta.stamp || ''})`);
p();
const gp = Number(meta.gen_procs || 1);
p('Produced by `bench/compare` (see bench/README.md). Everything on loopback on one');
p(`2-core machine. The load generator is ${gp > 1 ? `${gp} chatbench processes per W1/W2 run, started together and`
  : 'one chatbench process per W1/W2 run'}`);
if (gp > 1) p('merged (bench/cbmerge.js: counts and histogram buckets summed, never percentiles averaged)');
p(`(W3: ${meta.w3_procs || 'W3_PROCS'} processes); its CPU is the sum over its processes and, per process, the busiest one:`);
p(`⚠ where one was above ${GEN_WARN} % of a core.`);
if (systems.some((s) => modeOf(s) === 'pinned')) {
  p(`"(pinned)": the server's processes on CPU ${meta.pin_server_cpus || 0} and the load generator on CPU ${meta.pin_gen_cpus || 1} (taskset), so a server's`);
  p('figures are per core and free of the generator; otherwise everything shares both cores, with both CPU shares shown.');
} else {
  p('Server and load generator share the cores, so every figure comes with both CPU shares.');
}
p();
p(`- command: \`${meta.command || ''}\``);
p(`- machine: ${meta.cpu || '?'}, Linux ${meta.kernel || '?'}, ${meta.nofile || '?'} open files per process, load average at start ${meta.loadavg || '?'}`);
p(`- versions: nginx ${meta.nginx}; ngx_chat_module ${meta.module}; nchan ${meta.nchan} (Debian libnginx-mod-nchan);`
  + ` Node ${meta.node}, uWebSockets.js ${meta.uws || '–'} (npm @trufflesuite/uws-js-unofficial, native binary), socket.io ${meta.socketio}, @socket.io/redis-adapter ${meta.redis_adapter}, redis (npm) ${meta.redis_js}, pg (npm) ${meta.pg_js};`
  + ` redis-server ${meta.redis}; PostgreSQL ${meta.postgres}`);
p(`- systems: ngx_chat = nginx + module, ${meta.ngx_workers || 2} worker${Number(meta.ngx_workers || 2) === 1 ? '' : 's'}, embedded (bench/conf/ngx_chat.conf); nchan = nginx + nchan, ${meta.ngx_workers || 2} worker${Number(meta.ngx_workers || 2) === 1 ? '' : 's'},`
  + ` in-memory (bench/conf/nchan.conf); uws = bench/uws/server.js, one process, rooms as uWS topics (app.publish), no presence and no history (its best case); socketio = bench/socketio/server.js --mode memory; socketio+redis+pg = the same with`
  + ` @socket.io/redis-adapter and an awaited PostgreSQL INSERT per message; Socket.io runs as ${Number(meta.sio_workers || 1) === 1 ? 'one Node process, as users run it' : `${meta.sio_workers} Node processes (node:cluster)`}`);
for (const s of skips) p(`- **${s.system} skipped**: ${s.reason}`);
for (const d of died) p(`- **${d.system} died** during the run: ${String(d.log).split('\n').slice(-2).join(' / ')}`);
for (const e of errs) p(`- **${e.system}** error.log: \`${String(e.lines).split('\n')[0]}\``);
for (const l of recs.filter((r) => r.kind === 'log')) {
  if (!l.counts) continue;
  p(`- ${l.system} error.log: ${l.counts}; most frequent:`);
  for (const x of String(l.sample).split('\n').filter(Boolean)) p(`  \`${x.trim().slice(0, 200)}\``);
}
p();

// ---- summary ----
const rows = [
  ['W1 max sustainable deliveries/s (≥ 99.9 % delivered, p99 < 50 ms)', 'hi', (s) => (s.best ? s.best.f.dps : null),
    (s) => (s.best ? `${fmt(s.best.f.dps)} (${Number(s.best.rate) === 0 ? 'unlimited' : `${s.best.rate} msg/s`})` : (s.w1.length ? 'none passed' : '–'))],
  ['W1 unlimited: deliveries/s', 'hi', (s) => s.unl && s.unl.f && s.unl.f.dps, null],
  ['W1 unlimited: delivered', 'hi', (s) => s.unl && s.unl.f && s.unl.f.delivered, (s) => pct(s.unl && s.unl.f && s.unl.f.delivered)],
  ['W1 unlimited: p99 latency ms', 'lo', (s) => s.unl && s.unl.f && s.unl.f.p99, (s) => ms(s.unl && s.unl.f && s.unl.f.p99)],
  ['W1 unlimited: server CPU (% of a core)', 'info', (s) => s.unl && s.unl.f && s.unl.f.srv, (s) => corePct(s.unl && s.unl.f && s.unl.f.srv)],
  ['W1 unlimited: load generator CPU', 'info', (s) => s.unl && s.unl.f && s.unl.f.cli, (s, sys) => genCell(s.unl && s.unl.f, `${sys} W1 unlimited`)],
  ['W2 delivered', 'hi', (s) => s.w2 && s.w2.delivered, (s) => pct(s.w2 && s.w2.delivered)],
  ['W2 latency p50 ms', 'lo', (s) => s.w2 && s.w2.p50, (s) => ms(s.w2 && s.w2.p50)],
  ['W2 latency p99 ms', 'lo', (s) => s.w2 && s.w2.p99, (s) => ms(s.w2 && s.w2.p99)],
  ['W2 latency p99.9 ms', 'lo', (s) => s.w2 && s.w2.p999, (s) => ms(s.w2 && s.w2.p999)],
  ['W2 deliveries per server CPU-second', 'hi', (s) => s.w2 && s.w2.perCpu, null],
  ['W2 server CPU (% of a core)', 'lo', (s) => s.w2 && s.w2.srv, (s) => corePct(s.w2 && s.w2.srv)],
  ['W2 load generator CPU', 'info', (s) => s.w2 && s.w2.cli, (s, sys) => genCell(s.w2, `${sys} W2`)],
  ['W3 joined / target', 'info', (s) => s.w3 && s.w3.joined, (s) => (s.w3 ? `${fmt(s.w3.joined)} / ${fmt(s.w3.target)}` : '–')],
  ['W3 server memory per connection kB', 'lo', (s) => s.w3 && s.w3.kb, (s) => (s.w3 ? fmt(s.w3.kb, 1) : '–')],
  ['W3 connect rate conn/s (open + join)', 'hi', (s) => s.w3 && s.w3.rate, null],
  ['W3 server CPU per connection µs', 'lo', (s) => s.w3 && s.w3.usPerConn, null],
  ['W3 load generator CPU (ramp)', 'info', (s) => s.w3 && s.w3.cli, (s, sys) => genCell(s.w3, `${sys} W3 ramp`)],
];

function ratio(kind, ours, theirs) {
  if (kind === 'info' || ours == null || theirs == null || !(ours > 0) || !(theirs > 0)) return '';
  const r = kind === 'hi' ? ours / theirs : theirs / ours;
  return `×${r >= 10 ? fmt(r, 0) : fmt(r, r >= 1.95 ? 1 : 2)}`;
}

const modes = [...new Set(systems.map(modeOf))];
for (const mode of modes) {
  const sys = systems.filter((s) => modeOf(s) === mode);
  const sfx = mode === 'pinned' ? PINNED : '';
  const ours = OURS + sfx;
  const pairs = [];
  if (S[ours]) for (const o of sys) if (o !== ours && baseOf(o) !== 'ngx_chat+pg') pairs.push([ours, o]);
  if (S[`ngx_chat+pg${sfx}`] && S[`socketio+redis+pg${sfx}`]) pairs.push([`ngx_chat+pg${sfx}`, `socketio+redis+pg${sfx}`]);

  p(modes.length > 1 ? `## Summary: ${mode === 'pinned' ? `pinned (server on CPU ${meta.pin_server_cpus || 0}, load generator on CPU ${meta.pin_gen_cpus || 1})` : 'shared cores'}`
    : `## Summary${mode === 'pinned' ? ` (pinned: server on CPU ${meta.pin_server_cpus || 0}, load generator on CPU ${meta.pin_gen_cpus || 1})` : ''}`);
  p();
  p('×N = how many times better ngx_chat is than that system on that figure (ours ÷ theirs for');
  p('throughput, theirs ÷ ours for latency, memory and CPU); below ×1 it is worse. Rows marked');
  p('(info) get no ratio. Single runs: treat differences under ~20 % as noise.');
  p();
  const head = ['figure', ...sys.map((s) => `**${s}**`), ...pairs.map(([a, b]) => `${baseOf(a)} vs ${baseOf(b)}`)];
  p(`| ${head.join(' | ')} |`);
  p(`|${head.map((_, i) => (i ? '---:' : '---')).join('|')}|`);
  for (const [name, kind, get, show] of rows) {
    // a figure from a run whose busiest load process was above GEN_WARN
    const from = (x) => (name.startsWith('W1 max') ? x.best && x.best.f
      : name.startsWith('W1 unlimited') ? x.unl && x.unl.f
        : name.startsWith('W2') ? x.w2 : name.startsWith('W3') ? x.w3 : null);
    const flag = (x) => (!/generator/.test(name) && from(x) && from(x).genMax > GEN_WARN ? ' ⚠' : '');
    const cells = sys.map((s) => `${show ? show(S[s], s) : fmt(get(S[s]))}${flag(S[s])}`);
    const rs = pairs.map(([a, b]) => ratio(kind, get(S[a]), get(S[b])));
    p(`| ${name}${kind === 'info' ? ' (info)' : ''} | ${cells.join(' | ')} | ${rs.join(' | ')} |`);
  }
  p();
}

// ---- W1 ----
if (runs.some((r) => r.workload === 'W1')) {
  const first = runs.find((r) => r.workload === 'W1' && r.result);
  p(`## W1 fan-out: 1 room of ${first ? fmt(first.result.conns) : '?'} members, one sender`);
  p();
  p('Each step is a fresh chatbench run (connect, join, settle, send, drain). "unlimited" = closed loop');
  const unlr = runs.find((r) => r.workload === 'W1' && r.result && Number(r.rate) === 0) || first;
  const wo = unlr ? unlr.result.window_on : undefined;
  if (wo === 'all' && (unlr.result.gen_procs || 1) > 1) {
    p(`with ${unlr.result.window} sends in flight, each until it has reached every member held by the sending load process`);
    p(`(chatbench --window-on all in process 0 of ${unlr.result.gen_procs}, which holds ${fmt(unlr.result.gen[0].conns)} of the members: the same flow control for`);
    p('every system; the others only receive). ok = ≥ 99.9 % delivered and p99 < 50 ms.');
  } else if (wo === 'all') {
    p(`with ${unlr.result.window} sends in flight, each until it has reached every member (chatbench --window-on all: the same`);
    p('flow control for every system). ok = ≥ 99.9 % delivered and p99 < 50 ms.');
  } else {
    p(`with ${unlr ? unlr.result.window : '?'} sends in flight (ngx_chat, Socket.io: until the ack; nchan has no ack: until the`);
    p('sender\'s own copy arrives). ok = ≥ 99.9 % delivered and p99 < 50 ms.');
  }
  p();
  p('| system | rate | sent | delivered | out of order | deliveries/s | p50 ms | p99 ms | p99.9 ms | server CPU | load gen CPU | other CPU | ok | limited by |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|---|');
  for (const sys of systems) {
    for (const x of S[sys].w1) {
      const f = x.f;
      if (!f) { p(`| ${sys} | ${x.rate} | no result | | | | | | | | | | | |`); continue; }
      p(`| ${sys} | ${Number(x.rate) === 0 ? 'unlimited' : `${x.rate}/s`} | ${fmt(f.sent)} | ${pct(f.delivered)} | ${fmt(f.reord)} | ${fmt(f.dps)} | ${ms(f.p50)} | ${ms(f.p99)} | ${ms(f.p999)} | ${corePct(f.srv)} | ${genCell(f, `${sys} W1 ${Number(x.rate) === 0 ? 'unlimited' : `${x.rate}/s`}`)} | ${corePct(f.other)} | ${passes(f) ? 'yes' : 'no'} | ${limit(sys, f)} |`);
    }
  }
  p();
}

// ---- W2 ----
if (runs.some((r) => r.workload === 'W2')) {
  const first = runs.find((r) => r.workload === 'W2' && r.result);
  const r0 = first && first.result;
  p(`## W2 chat mix: ${r0 ? `${fmt(r0.conns)} connections, ${fmt(r0.rooms)} rooms of ${fmt(r0.conns / r0.rooms)}, ${fmt(r0.senders)} senders × ${r0.rate_per_sender} msg/s for ${r0.duration_s} s` : ''}`);
  p();
  p('| system | joined | delivered | out of order | deliveries/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | ack p99 ms | deliveries / server CPU-s | server CPU | load gen CPU | other CPU | limited by |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const sys of systems) {
    const f = S[sys].w2;
    if (!f) continue;
    p(`| ${sys} | ${fmt(f.joined)} | ${pct(f.delivered)} | ${fmt(f.reord)} | ${fmt(f.dps)} | ${ms(f.p50)} | ${ms(f.p90)} | ${ms(f.p99)} | ${ms(f.p999)} | ${ms(f.max)} | ${ms(f.ack99)} | ${fmt(f.perCpu)} | ${corePct(f.srv)} | ${genCell(f, `${sys} W2`)} | ${corePct(f.other)} | ${limit(sys, f)} |`);
  }
  p();
}

// ---- W3 ----
if (runs.some((r) => r.workload === 'W3')) {
  p('## W3 capacity: idle joined connections');
  p();
  p('Run first, on a fresh server. Opened by several chatbench processes at once (one process holds at most');
  p('~19,950 here), 256 handshakes in flight each. Memory = growth of the summed PSS of the server\'s processes');
  p('(with Redis and PostgreSQL where used) from before the ramp to after all joined, per joined connection;');
  p('connect rate = all opened ÷ the slowest process\'s time to its last 101; CPU over the ramp (connect + join');
  p('+ presence). ngx_chat and the Socket.io server tell the room about each join (presence: with rooms of 20,');
  p('190 presence frames a room); nchan and uws have no presence at all, so their joins are cheaper by that much.');
  p('One Node process (uws, Socket.io) holds at most W3_SIO_CONNS (19,800) under the 20,000 open files limit.');
  p();
  p('| system | joined / target | failed | conn/s | ramp s | kB per conn | server MB before → after | server µs CPU per conn | server CPU | load gen CPU | failures |');
  p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|');
  for (const sys of systems) {
    const w = S[sys].w3;
    if (!w) continue;
    const fl = Object.entries(w.failures).map(([k, v]) => `${k}: ${v}`).join(', ') || '–';
    p(`| ${sys} | ${fmt(w.joined)} / ${fmt(w.target)} | ${fmt(w.failed)} | ${fmt(w.rate)} | ${fmt(w.ramp, 1)} | ${fmt(w.kb, 1)} | ${fmt(w.mem0, 0)} → ${fmt(w.mem1, 0)} | ${fmt(w.usPerConn)} | ${corePct(w.srv)} | ${genCell(w, `${sys} W3 ramp`)} | ${fl} |`);
  }
  p();
}

// ---- generator warnings ----
if (warned.length) {
  p(`⚠ A load generator process used more than ${GEN_WARN} % of a core in these runs, so it may have`);
  p('been (part of) the limit: read their latency and throughput as a floor for the server, and raise');
  p('GEN_PROCS (or use PIN=1) to check:');
  p();
  for (const w of [...new Set(warned)]) p(`- ${w}`);
  p();
}

// ---- anomalies ----
const notes = [];
for (const r of runs) {
  const list = r.workload === 'W3' ? (r.results || []) : [r.result];
  for (const x of list) {
    if (!x) { notes.push(`${r.system} ${r.workload}${r.rate != null ? ` rate ${r.rate}` : ''}: no result`); continue; }
    const bits = [];
    if (Object.keys(x.closes || {}).length) bits.push(`closes ${JSON.stringify(x.closes)}`);
    if (Object.keys(x.errors || {}).length) bits.push(`errors ${JSON.stringify(x.errors)}`);
    if (Object.keys(x.failures || {}).length) bits.push(`failures ${JSON.stringify(x.failures)}`);
    if (x.dup) bits.push(`duplicates ${x.dup}`);
    if (x.reordered) bits.push(`deliveries out of the sender's order ${x.reordered} (of ${x.received})`);
    if (x.skipped_backpressure) bits.push(`sends skipped (client backpressure) ${x.skipped_backpressure}`);
    if (x.join_failed) bits.push(`join failed ${x.join_failed}`);
    if (bits.length) notes.push(`${r.system} ${r.workload}${r.rate != null ? ` rate ${Number(r.rate) === 0 ? 'unlimited' : r.rate}` : ''}: ${bits.join('; ')}`);
  }
}
if (notes.length) {
  p('## Anomalies seen by chatbench');
  p();
  for (const n of notes) p(`- ${n}`);
  p();
}

// ---- commands ----
p('## Exact commands');
p();
p('Each run adds `--server-pidfile <the system\'s pidfiles> --json --quiet`.');
p();
p('```');
p(meta.command || '');
for (const sys of systems) {
  const s = S[sys];
  const c = [];
  if (s.w1.length) c.push(s.w1[s.w1.length - 1].cmd);
  if (s.w2cmd) c.push(s.w2cmd);
  if (s.w3) c.push(s.w3.cmd);
  p(`# ${sys}`);
  for (const x of c) p(x);
}
p('```');

process.stdout.write(`${out.join('\n')}\n`);
