// bench/million/report.js RUNDIR OUT key=value...: the report of one
// bench/million/run (OUT.md and OUT.json) from the run directory's files.
'use strict';
const fs = require('fs');
const [run, out, ...kv] = process.argv.slice(2);
const P = {};
for (const a of kv) { const i = a.indexOf('='); P[a.slice(0, i)] = a.slice(i + 1); }
const num = (x) => (x === undefined || x === '' ? NaN : +x);
const read = (f) => { try { return fs.readFileSync(`${run}/${f}`, 'utf8'); } catch (e) { return null; } };
const json = (f) => { try { return JSON.parse(read(f)); } catch (e) { return null; } };

function snap(tag) {
    const t = read(`snap.${tag}`);
    if (!t) return null;
    const s = {};
    for (const l of t.split('\n')) {
        const m = l.match(/^(\S+) (\S+)$/);
        if (m) s[m[1]] = +m[2];
    }
    return s;
}
const S = {};
for (const tag of ['base', 'server0', 'joined', 'probe', 'held', 'closed', 'after']) S[tag] = snap(tag);

const N = num(P.N);
const cbs = [];
for (let k = 0; k < num(P.PROCS); k++) cbs.push(json(`cb.${k}.json`));
const sum = (f) => cbs.reduce((a, r) => a + (r ? f(r) : 0), 0);
const merge = (f) => {
    const o = {};
    for (const r of cbs) for (const [k, v] of Object.entries((r && r[f]) || {})) o[k] = (o[k] || 0) + v;
    return o;
};
const joined = sum((r) => r.joined);
const opened = sum((r) => r.opened);
const fails = {
    connect_failed: sum((r) => r.connect_failed), handshake_failed: sum((r) => r.handshake_failed),
    timeouts: sum((r) => r.timeouts), join_failed: sum((r) => r.join_failed),
    closed_after_open: sum((r) => r.closed_after_open), protocol_errors: sum((r) => r.protocol_errors),
};
const nfail = Object.values(fails).reduce((a, b) => a + b, 0);
const noResult = cbs.filter((r) => !r).length;
const rampS = Math.max(0, ...cbs.filter(Boolean).map((r) => r.ramp_s));
const rampWall = num(P.t1) - num(P.t0);
const srvCpu = (num(P.tick1) - num(P.tick0)) / num(P.hz);
const cliCpu = sum((r) => r.ramp_client_cpu_s || 0);
const abort = read('abort');

// the ramp as the zone counted it
const tl = (read('timeline') || '').trim().split('\n').filter(Boolean).map((l) => {
    const [t, c, avail, inuse] = l.split(' ');
    return { t: +(+t - num(P.t0)).toFixed(1), conns: c === 'null' ? null : +c, avail_mb: Math.round(+avail / 1024), tcp_inuse: +inuse };
});
let peakRate = 0;
for (let i = 1; i < tl.length; i++) {
    if (tl[i].conns == null || tl[i - 1].conns == null) continue;
    const r = (tl[i].conns - tl[i - 1].conns) / (tl[i].t - tl[i - 1].t);
    tl[i].rate = Math.round(r);
    peakRate = Math.max(peakRate, r);
}
const minAvail = Math.min(...tl.map((x) => x.avail_mb), Infinity);

// memory
const at = S.held || S.probe || S.joined;
const d = (k, a = S.server0, b = at) => (a && b && b[k] !== undefined && a[k] !== undefined ? b[k] - a[k] : NaN);
const srv = at ? {
    pss_kb: at['server.Pss'], pss_anon_kb: at['server.Pss_Anon'], pss_shmem_kb: at['server.Pss_Shmem'],
    pss_file_kb: at['server.Pss_File'], rss_kb: at['server.Rss'], procs: at['server.procs'],
    pss_before_kb: S.server0 && S.server0['server.Pss'],
    pss_shmem_before_kb: S.server0 && S.server0['server.Pss_Shmem'],
} : null;
const perConnB = (kb) => (kb * 1024 / Math.max(joined, 1));
const cli = (S.joined || at) ? { pss_kb: (S.joined || at)['client.Pss'], procs: (S.joined || at)['client.procs'] } : null;

// kernel, base (before nginx) -> held; per connection = one client + one server socket
const kern = {};
const kkeys = ['meminfo.Slab', 'meminfo.SUnreclaim', 'meminfo.SReclaimable', 'meminfo.MemAvailable', 'meminfo.Percpu',
    'meminfo.PageTables', 'meminfo.AnonPages', 'meminfo.Shmem', 'sockstat.sockets_used', 'sockstat.tcp_inuse',
    'sockstat.tcp_alloc', 'sockstat.tcp_mem', 'sockstat.tcp_orphan', 'sockstat.tcp_tw', 'files.allocated', 'conntrack.count'];
const slabNames = new Set();
for (const s of [S.base, at]) if (s) for (const k of Object.keys(s)) if (k.startsWith('slab.') && k.endsWith('.kb')) slabNames.add(k.slice(5, -3));
for (const s of [S.base, at]) if (s) for (const k of Object.keys(s)) if (k.startsWith('nstat.') && !kkeys.includes(k)) kkeys.push(k);
for (const k of kkeys) kern[k] = { base: S.base && S.base[k], held: at && at[k], after: S.after && S.after[k] };
for (const n of slabNames) {
    kern[`slab.${n}.kb`] = { base: S.base && S.base[`slab.${n}.kb`], held: at && at[`slab.${n}.kb`], after: S.after && S.after[`slab.${n}.kb`] };
    kern[`slab.${n}.objs`] = { base: S.base && S.base[`slab.${n}.objs`], held: at && at[`slab.${n}.objs`] };
}
for (const v of Object.values(kern)) v.delta = v.held - v.base;

const probes = { empty: json('probe.empty.json'), held: json('probe.held.json') };
const stJ = (() => { try { return JSON.parse(read('status.joined')); } catch (e) { return null; } })();
const stE = (() => { try { return JSON.parse(read('status.end')); } catch (e) { return null; } })();
const wf = (read('worker-fds') || '').trim().split('\n').filter(Boolean).map((l) => +l.split(' ')[1]);
const errs = (read('errors') || '').trim().split('\n').filter(Boolean);
const errKinds = {};
for (const l of errs) {
    const m = l.replace(/^[0-9/: ]+/, '').replace(/[0-9]+#[0-9]+: (\*[0-9]+ )?/, '').replace(/, client: .*/, '');
    errKinds[m] = (errKinds[m] || 0) + 1;
}

const GOAL_KB = 1.5e9 / 1024;
const p99 = probes.held ? probes.held.latency_ms.p99 : NaN;
const probeOk = probes.held && probes.held.lost === 0 && probes.held.opened === num(P.PROBE_CONNS);
const goals = {
    all_joined: { met: joined === N && nfail === 0 && !abort, figure: `${joined} / ${N}, ${nfail} failures` },
    server_memory: { met: srv && srv.pss_kb <= GOAL_KB, figure: srv ? `${(srv.pss_kb / 1048576).toFixed(2)} GiB (${(srv.pss_kb * 1024 / 1e9).toFixed(2)} GB)` : 'n/a' },
    probe_p99_under_10ms: { met: probeOk && p99 < 10, figure: probes.held ? `p99 ${p99} ms, ${probes.held.received}/${probes.held.expected} delivered` : 'n/a' },
    no_error_log: { met: errs.length === 0, figure: `${errs.length} lines` },
};

const report = {
    tool: 'bench/million', params: P, aborted: abort ? abort.trim() : null,
    joined, opened, failures: fails, failure_reasons: merge('failures'), errors: merge('errors'), closes: merge('closes'),
    chatbench_without_result: noResult,
    ramp: { slowest_process_s: rampS, wall_s: rampWall, joined_per_s: joined / rampS, peak_joined_per_s: Math.round(peakRate),
        server_cpu_s: srvCpu, server_us_per_conn: srvCpu * 1e6 / Math.max(joined, 1), client_cpu_s: cliCpu, timeline: tl, min_mem_available_mb: minAvail },
    server: srv, server_bytes_per_conn: srv ? perConnB(srv.pss_kb - srv.pss_before_kb) : null,
    server_bytes_per_conn_total: srv ? perConnB(srv.pss_kb) : null,
    client: cli, client_bytes_per_conn: cli ? perConnB(cli.pss_kb) : null,
    kernel: kern, status_joined: stJ, status_end: stE,
    worker_fds: wf.length ? { min: Math.min(...wf), max: Math.max(...wf), mean: wf.reduce((a, b) => a + b, 0) / wf.length, n: wf.length } : null,
    hold: { s: num(P.th1) - num(P.th0), server_cpu_s: (num(P.tickh1) - num(P.tickh0)) / num(P.hz), pings_to_clients: sum((r) => r.pings || 0) },
    close_s: num(P.tc1) - num(P.tc0), drain_s: num(P.td1) - num(P.tc1), probes, error_log: errKinds, goals,
};
fs.writeFileSync(`${out}.json`, JSON.stringify(report, null, 1) + '\n');

// ---- markdown
const f0 = (x) => (Number.isFinite(x) ? Math.round(x).toLocaleString('en') : 'n/a');
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const f2 = (x) => (Number.isFinite(x) ? x.toFixed(2) : 'n/a');
const mb = (kb) => (Number.isFinite(kb) ? `${(kb / 1024).toFixed(0)} MB` : 'n/a');
const L = [];
L.push(`# bench/million: ${f0(N)} idle joined connections (${P.WORKERS} workers, ${P.PROCS} chatbench processes)`);
L.push('');
L.push(`Module ${P.module}, nginx ${P.nginx}, kernel ${P.kernel}. Rooms of ${P.ROOM_SIZE} (${f0(N / num(P.ROOM_SIZE))} rooms), zone ${P.ZONE_MB} MB, worker_connections ${P.WCONN}, ${f0(num(P.PER))} connections per chatbench process from ${P.SRC_IPS} source addresses each, ${P.INFLIGHT} handshakes in flight each.`);
L.push(`Keepalive: chat_ping_interval ${P.PING_INTERVAL} (${f0(N / (parseFloat(P.PING_INTERVAL) || 30))} pings/s once all are connected). Command: \`N=${N} PING_INTERVAL=${P.PING_INTERVAL} RAMP_TIMEOUT_S=${P.RAMP_TIMEOUT_S} HOLD_S=${P.HOLD_S} bench/million/run\`${abort ? `  \n**ABORTED by the memory guard**: ${abort.trim()}` : ''}`);
L.push('');
L.push('## Goals');
L.push('');
L.push('| goal | met | figure |');
L.push('|---|:--:|---|');
L.push(`| all joined, zero errors | ${goals.all_joined.met ? 'yes' : '**no**'} | ${goals.all_joined.figure} |`);
L.push(`| server memory ≤ 1.5 GB (PSS of master + workers, the zone's resident pages included once) | ${goals.server_memory.met ? 'yes' : '**no**'} | ${goals.server_memory.figure} |`);
L.push(`| 10-member room delivery p99 < 10 ms while held | ${goals.probe_p99_under_10ms.met ? 'yes' : '**no**'} | ${goals.probe_p99_under_10ms.figure} |`);
L.push(`| no [error]/[alert]/[crit] in error.log | ${goals.no_error_log.met ? 'yes' : '**no**'} | ${goals.no_error_log.figure} |`);
L.push('');
L.push('## Ramp');
L.push('');
L.push('| figure | value |');
L.push('|---|---:|');
L.push(`| joined / opened / target | ${f0(joined)} / ${f0(opened)} / ${f0(N)} |`);
L.push(`| failures | ${Object.entries(fails).map(([k, v]) => `${k} ${v}`).join(', ')}${noResult ? `; ${noResult} chatbench without result` : ''} |`);
const fr = Object.entries(report.failure_reasons).concat(Object.entries(report.errors), Object.entries(report.closes));
if (fr.length) L.push(`| reasons | ${fr.map(([k, v]) => `${k}: ${v}`).join('; ')} |`);
L.push(`| ramp (slowest process, to its last joined) | ${f1(rampS)} s |`);
L.push(`| joined per second (all / ramp) | ${f0(joined / rampS)} |`);
L.push(`| peak joined per second (zone count, 2 s samples) | ${f0(peakRate)} |`);
L.push(`| server CPU over the ramp | ${f1(srvCpu)} s = ${f0(srvCpu * 1e6 / Math.max(joined, 1))} µs per connection |`);
L.push(`| client CPU over the ramp | ${f1(cliCpu)} s = ${f0(cliCpu * 1e6 / Math.max(joined, 1))} µs per connection |`);
L.push(`| lowest MemAvailable during the run | ${f0(minAvail)} MB (guard ${P.GUARD_MB} MB) |`);
L.push(`| connections per worker (open fds, min / mean / max) | ${wf.length ? `${f0(Math.min(...wf))} / ${f0(report.worker_fds.mean)} / ${f0(Math.max(...wf))}` : 'n/a'} |`);
L.push(`| zone status while held | ${stE ? `connections ${stE.connections}, rooms ${stE.rooms}, users ${stE.users}, zone_full ${stE.zone_full}` : 'n/a'} |`);
if (stE && stE.closes) L.push(`| closes by the server so far (zone, by code; 1001 = ping timeout or shutdown) | ${Object.entries(stE.closes).filter(([, v]) => v).map(([k, v]) => `${k}: ${v}`).join(', ') || 'none'} |`);
if (report.hold.s > 0) L.push(`| server CPU while held (probe included) | ${f1(report.hold.server_cpu_s)} s in ${f1(report.hold.s)} s = ${f0(100 * report.hold.server_cpu_s / report.hold.s)} % of a core; pings the clients answered: ${f0(report.hold.pings_to_clients)} |`);
L.push(`| closing all (INT to the clients until they exit) | ${f1(report.close_s)} s |`);
if (Number.isFinite(report.drain_s)) L.push(`| until the server had closed its ends too (zone count 0) | ${f1(report.drain_s)} s after the clients (${f0(joined / Math.max(report.close_s + report.drain_s, 0.001))} closes/s overall) |`);
L.push('');
if (tl.length) {
    const step = Math.max(1, Math.ceil(tl.length / 16));
    L.push('Zone connections during the ramp and hold (2 s samples; every ' + step + '. shown):');
    L.push('');
    L.push('| t s | connections | joined/s | MemAvailable MB | TCP sockets |');
    L.push('|---:|---:|---:|---:|---:|');
    tl.forEach((x, i) => {
        if (i % step === 0 || i === tl.length - 1) L.push(`| ${x.t} | ${f0(x.conns)} | ${f0(x.rate)} | ${f0(x.avail_mb)} | ${f0(x.tcp_inuse)} |`);
    });
    L.push('');
}
L.push('## Memory');
L.push('');
L.push('| | before the ramp | while held | per joined connection |');
L.push('|---|---:|---:|---:|');
if (srv) {
    const s0 = S.server0;
    L.push(`| server PSS (master + ${P.WORKERS} workers) | ${mb(srv.pss_before_kb)} | ${mb(srv.pss_kb)} | ${f0(perConnB(srv.pss_kb - srv.pss_before_kb))} B growth, ${f0(perConnB(srv.pss_kb))} B all |`);
    L.push(`| of which anon (worker heaps, connection arrays) | ${mb(s0['server.Pss_Anon'])} | ${mb(srv.pss_anon_kb)} | ${f0(perConnB(srv.pss_anon_kb - s0['server.Pss_Anon']))} B |`);
    L.push(`| of which shmem (the zone's resident pages) | ${mb(s0['server.Pss_Shmem'])} | ${mb(srv.pss_shmem_kb)} | ${f0(perConnB(srv.pss_shmem_kb - s0['server.Pss_Shmem']))} B |`);
    L.push(`| of which file (nginx, the module, libraries) | ${mb(s0['server.Pss_File'])} | ${mb(srv.pss_file_kb)} | |`);
    L.push(`| server RSS (summed, shared pages counted per process) | ${mb(s0['server.Rss'])} | ${mb(srv.rss_kb)} | |`);
}
if (cli) L.push(`| client PSS (${cli.procs} chatbench) | | ${mb(cli.pss_kb)} | ${f0(perConnB(cli.pss_kb))} B |`);
L.push('');
L.push('## What the kernel holds');
L.push('');
L.push(`Before nginx started → while held (${f0(joined)} joined + the probe; each connection is two TCP sockets on loopback, the client's and the server's), and after everything closed. Per connection = growth / joined; per socket = half of it.`);
L.push('');
L.push('| figure | before | held | after | per connection | per socket |');
L.push('|---|---:|---:|---:|---:|---:|');
const krow = (label, k, unit) => {
    const v = kern[k];
    if (!v || !Number.isFinite(v.held)) return;
    const per = v.delta / Math.max(joined, 1);
    const fmt = unit === 'kB' ? (x) => mb(x) : f0;
    const pfmt = unit === 'kB' ? (x) => `${f0(x * 1024)} B` : unit === 'pages' ? (x) => `${f0(x * 4096)} B` : (x) => f2(x);
    L.push(`| ${label} | ${fmt(v.base)} | ${fmt(v.held)} | ${fmt(v.after)} | ${pfmt(per)} | ${pfmt(per / 2)} |`);
};
krow('Slab (meminfo)', 'meminfo.Slab', 'kB');
krow('SUnreclaim', 'meminfo.SUnreclaim', 'kB');
krow('SReclaimable', 'meminfo.SReclaimable', 'kB');
krow('Percpu', 'meminfo.Percpu', 'kB');
krow('PageTables', 'meminfo.PageTables', 'kB');
krow('MemAvailable', 'meminfo.MemAvailable', 'kB');
krow('sockstat TCP inuse', 'sockstat.tcp_inuse');
krow('sockstat TCP alloc', 'sockstat.tcp_alloc');
krow('sockstat TCP mem (pages, against tcp_mem)', 'sockstat.tcp_mem', 'pages');
krow('sockstat sockets used', 'sockstat.sockets_used');
krow('file handles allocated', 'files.allocated');
krow('nf_conntrack entries', 'conntrack.count');
const big = [...slabNames].map((n) => [n, kern[`slab.${n}.kb`].delta]).filter(([n, x]) => Math.abs(x) > 1024 || ['TCP', 'TCPv6', 'sock_inode_cache', 'dentry', 'filp'].includes(n))
    .sort((a, b) => b[1] - a[1]);
for (const [n] of big) krow(`slab ${n}`, `slab.${n}.kb`, 'kB');
L.push('');
L.push('TCP counters of the whole machine (`nstat`; other users count too), growth from before nginx to while held, and to the end:');
L.push('');
L.push('| counter | to held | to the end |');
L.push('|---|---:|---:|');
for (const k of kkeys.filter((x) => x.startsWith('nstat.'))) {
    const v = kern[k];
    if (Number.isFinite(v.delta)) L.push(`| ${k.slice(6)} | ${f0(v.delta)} | ${f0(v.after - v.base)} |`);
}
L.push('');
if (kern['slab.proc_inode_cache.kb'] && kern['slab.proc_inode_cache.kb'].delta > 10240) L.push(`\nproc_inode_cache grew by ${mb(kern['slab.proc_inode_cache.kb'].delta)} (${f0(kern['slab.proc_inode_cache.objs'].delta)} objects, each with a dentry): a process read /proc/PID/fd of the processes holding the sockets (\`ss -p\`, \`lsof\`; run lists the workers' fds only after the last snapshot). That memory is reclaimable and not the sockets' own.\n`);
L.push(`\`slabtop -o -s c\` while held and before: in the run directory (\`slabtop.held\`, \`slabtop.base\`). tcp_mem = ${P.tcp_mem} pages; somaxconn, tcp_max_syn_backlog, ip_local_port_range, file-max = ${P.sysctls}.`);
L.push('');
L.push('## Delivery while held (the probe)');
L.push('');
L.push(`${P.PROBE_CONNS} connections in rooms of 10 (their own rooms), one sender per room at ${P.PROBE_RATE} msg/s for ${P.PROBE_S} s, from one chatbench process: once on the empty server, once while all ${f0(joined)} are held.`);
L.push('');
L.push('| when | joined | sent | delivered / expected | p50 ms | p90 ms | p99 ms | max ms | errors |');
L.push('|---|---:|---:|---:|---:|---:|---:|---:|---|');
for (const [k, r] of Object.entries(probes)) {
    if (!r) { L.push(`| ${k} | no result | | | | | | | |`); continue; }
    const e = Object.entries(Object.assign({}, r.failures, r.errors, r.closes)).map(([a, b]) => `${a}: ${b}`).join('; ') || '0';
    L.push(`| ${k === 'empty' ? 'empty server' : 'all held'} | ${r.joined} | ${r.sent} | ${r.received} / ${r.expected} | ${r.latency_ms.p50} | ${r.latency_ms.p90} | ${r.latency_ms.p99} | ${r.latency_ms.max} | ${e} |`);
}
L.push('');
if (errs.length) {
    L.push('## error.log');
    L.push('');
    for (const [m, c] of Object.entries(errKinds).sort((a, b) => b[1] - a[1]).slice(0, 10)) L.push(`- ${c} × \`${m.slice(0, 200)}\``);
    L.push('');
}
fs.writeFileSync(`${out}.md`, L.join('\n') + '\n');
