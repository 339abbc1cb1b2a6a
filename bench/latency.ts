// Latency benchmark: round trip of a 4-byte trapped REGION_READ through the full server,
// against the physical floor, a minimal C responder on the same kind of socket (AF_UNIX
// stream), both measured in the same run by the same C client (bench/native/rr-client.c).
//
// Targets (issue): median <= 1.15x the floor, p99 <= 1.5x. These machines are noisy, so only
// ratios against a floor measured in the same run mean anything: floor and server are
// alternated over several rounds and every configuration is measured in each round.
//
// Servers:
//   floor     bench/native/echo-server.c -e: epoll loop, one read() per wakeup (the shape of
//             our addon's reader mode, without JavaScript). The doc's reference (§2 of
//             docs/node-native-plumbing.md) and the headline floor.
//   blocking  the same program without -e: read the header, then the payload, then write
//             (libvfio-user's way). Reported for reference.
//   addon     bench/server-main.ts --raw: Node + the addon's watch() reader mode + a bare JS
//             callback that answers from the receive buffer. Splits our overhead into "Node and
//             the addon" (addon - floor) and "our TypeScript layers" (ours - addon).
//   ours      bench/server-main.ts: VfioUserServer + a PciDevice with one trapped 4 KiB BAR.
// Configurations: "same CPU" (server and client under `taskset -c 0`; the headline, as the
// doc found cross-CPU wake-ups on these 2-vCPU VMs dominate everything), "cross CPU" (server
// on CPU 0, client on CPU 1), "same CPU, SCHED_FIFO" (both also under `chrt -f 10`, the
// condition of the doc's table; only where chrt is permitted) and "unpinned" (the scheduler
// decides, which on a 2-vCPU VM makes it a run-to-run mixture of same- and cross-CPU runs).
//
// Standalone: node dist/bench/latency.js [--rounds N] [--samples N] [--warmup N]
// (or BENCH_ROUNDS / BENCH_SAMPLES / BENCH_WARMUP in the environment).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { cpus, loadavg, release, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { repoRoot } from '../src/util/repo-root.js';

export interface LatencyOptions {
  rounds: number;
  /** Measured round trips per server per round. */
  samples: number;
  /** Unmeasured round trips before those (JIT warm-up for our server). */
  warmup: number;
  /** Progress messages (stderr by default). */
  progress: (message: string) => void;
}

export const TARGET_MEDIAN = 1.15;
export const TARGET_P99 = 1.5;

export type ServerKind = 'floor' | 'blocking' | 'addon' | 'ours';
const KINDS: readonly ServerKind[] = ['floor', 'blocking', 'addon', 'ours'];
const KIND_LABEL: Record<ServerKind, string> = {
  floor: 'floor: C epoll echo',
  blocking: 'C blocking echo (ref)',
  addon: 'Node addon-only echo (ref)',
  ours: 'ours: Node VfioUserServer',
};

/** Latency summary in nanoseconds (nearest-rank percentiles, like rr-client). */
export interface Summary {
  n: number;
  median: number;
  p90: number;
  p99: number;
  p999: number;
  mean: number;
  max: number;
}

export interface ConfigResult {
  name: string;
  description: string;
  headline: boolean;
  /** All rounds pooled. */
  pooled: Record<ServerKind, Summary>;
  /** Per round, for the spread. */
  rounds: Record<ServerKind, Summary>[];
  medianRatio: number;
  p99Ratio: number;
  medianPass: boolean;
  p99Pass: boolean;
  /** GC lines reported by our server process, one per round. */
  gcs: string[];
}

export interface LatencyReport {
  node: string;
  cpu: string;
  cpus: number;
  kernel: string;
  loadBefore: number[];
  loadAfter: number[];
  options: Omit<LatencyOptions, 'progress'>;
  configs: ConfigResult[];
  skipped: string[];
  seconds: number;
}

interface Config {
  name: string;
  description: string;
  headline: boolean;
  serverPrefix: string[];
  clientPrefix: string[];
}

const here = dirname(fileURLToPath(import.meta.url));

/** Compiles bench/native/NAME.c to build/bench/NAME with `cc -O2` unless the binary is newer. */
function buildTool(root: string, name: string, progress: (m: string) => void): string {
  const src = join(root, 'bench', 'native', `${name}.c`);
  const out = join(root, 'build', 'bench', name);
  if (existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) return out;
  mkdirSync(dirname(out), { recursive: true });
  const cc = process.env.CC || 'cc';
  const tmp = `${out}.${process.pid}.tmp`;
  const args = ['-O2', '-Wall', '-Wextra', '-o', tmp, src];
  progress(`latency: ${cc} ${args.join(' ')}`);
  const r = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.error || r.status !== 0) {
    rmSync(tmp, { force: true });
    throw new Error(`compiling ${src} failed: ${r.error?.message ?? `${cc} exited with ${r.status ?? r.signal}`}`);
  }
  renameSync(tmp, out);
  return out;
}

function summarize(samples: Float64Array): Summary {
  const s = Float64Array.from(samples).sort();
  const n = s.length;
  const pct = (p: number): number => s[Math.min(n, Math.max(1, Math.ceil((p / 100) * n))) - 1] as number;
  let sum = 0;
  for (const x of s) sum += x;
  return { n, median: pct(50), p90: pct(90), p99: pct(99), p999: pct(99.9), mean: sum / n, max: s[n - 1] as number };
}

function concat(parts: Float64Array[]): Float64Array {
  const out = new Float64Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Collects a child's output; resolves with its exit code (or the signal name). */
function finished(child: ChildProcess): Promise<{ code: number | string; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    stdout += d;
  });
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    stderr += d;
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code: code ?? signal ?? 'unknown', stdout, stderr }));
  });
}

function waitReady(child: ChildProcess, what: string, timeoutMs = 15000): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => done(new Error(`${what} did not become ready within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer | string): void => {
      seen += String(d);
      if (seen.split('\n').includes('ready')) done(null);
    };
    const onExit = (code: number | null, signal: string | null): void => done(new Error(`${what} exited (${code ?? signal}) before it was ready`));
    function done(err: Error | null): void {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.off('exit', onExit);
      if (err) reject(err);
      else resolve();
    }
    child.stdout?.on('data', onData);
    child.on('exit', onExit);
  });
}

interface Tools {
  client: string;
  echo: string;
  serverMain: string;
}

/** One server process + one client run; returns the measured samples (ns). */
async function measureOnce(
  tools: Tools,
  kind: ServerKind,
  config: Config,
  dir: string,
  opts: LatencyOptions,
): Promise<{ samples: Float64Array; gc: string | null }> {
  const socket = join(dir, `${kind}.sock`);
  const samplesFile = join(dir, `${kind}.samples`);
  rmSync(socket, { force: true });
  const serverCmd = {
    floor: [tools.echo, '-s', socket, '-e'],
    blocking: [tools.echo, '-s', socket],
    addon: [process.execPath, tools.serverMain, socket, '--stats', '--raw'],
    ours: [process.execPath, tools.serverMain, socket, '--stats'],
  }[kind];
  const full = [...config.serverPrefix, ...serverCmd];
  const server = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
  const serverDone = finished(server);
  try {
    await waitReady(server, KIND_LABEL[kind]);
    const clientCmd = [...config.clientPrefix, tools.client, '-s', socket, '-V', '-w', String(opts.warmup), '-n', String(opts.samples), '-o', samplesFile];
    const client = spawn(clientCmd[0] as string, clientCmd.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    const c = await finished(client);
    if (c.code !== 0) throw new Error(`rr-client against ${KIND_LABEL[kind]} failed (${c.code}): ${c.stderr.trim()}`);
    const text = readFileSync(samplesFile, 'utf8');
    const values = text.split('\n').filter((l) => l.length > 0);
    if (values.length !== opts.samples) throw new Error(`rr-client wrote ${values.length} samples, expected ${opts.samples}`);
    const samples = Float64Array.from(values, Number);
    const timer = setTimeout(() => server.kill('SIGKILL'), 10000);
    const s = await serverDone;
    clearTimeout(timer);
    if (s.code !== 0) throw new Error(`${KIND_LABEL[kind]} exited with ${s.code}: ${s.stderr.trim()}`);
    const gc = kind === 'ours' ? (/GCs: (.*)/.exec(s.stderr)?.[1] ?? null) : null;
    if (kind === 'ours' || kind === 'addon') {
      const reads = Number(/(\d+) register reads/.exec(s.stderr)?.[1]);
      if (reads !== opts.warmup + opts.samples) throw new Error(`${KIND_LABEL[kind]} served ${reads} register reads, expected ${opts.warmup + opts.samples}`);
    }
    return { samples, gc };
  } finally {
    if (server.exitCode === null && server.signalCode === null) server.kill('SIGKILL');
    rmSync(samplesFile, { force: true });
  }
}

function cpuModel(): string {
  try {
    const m = /^model name\s*:\s*(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (m?.[1]) return m[1].trim();
  } catch {
    // not Linux, or no /proc
  }
  return cpus()[0]?.model ?? 'unknown';
}

function runs(cmd: string[]): boolean {
  const r = spawnSync(cmd[0] as string, cmd.slice(1), { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

export function latencyOptionsFromEnv(argv: readonly string[] = [], env: NodeJS.ProcessEnv = process.env): LatencyOptions {
  const pick = (flag: string, name: string, fallback: number): number => {
    const i = argv.indexOf(flag);
    const raw = i >= 0 ? argv[i + 1] : env[name];
    if (raw === undefined || raw === '') return fallback;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`${flag} / ${name} must be a positive integer, got ${raw}`);
    return v;
  };
  return {
    rounds: pick('--rounds', 'BENCH_ROUNDS', 5),
    samples: pick('--samples', 'BENCH_SAMPLES', 20000),
    warmup: pick('--warmup', 'BENCH_WARMUP', 5000),
    progress: (m) => process.stderr.write(`${m}\n`),
  };
}

export async function runLatencyBenchmark(opts: LatencyOptions = latencyOptionsFromEnv()): Promise<LatencyReport> {
  const t0 = performance.now();
  const root = repoRoot(here);
  const tools: Tools = {
    client: buildTool(root, 'rr-client', opts.progress),
    echo: buildTool(root, 'echo-server', opts.progress),
    serverMain: join(here, 'server-main.js'),
  };
  if (!existsSync(tools.serverMain)) throw new Error(`${tools.serverMain} is missing: run npx tsc -p . first`);

  const configs: Config[] = [];
  const skipped: string[] = [];
  if (runs(['taskset', '-c', '0', 'true'])) {
    const cpu0 = ['taskset', '-c', '0'];
    configs.push({ name: 'same CPU', description: 'server and client both under taskset -c 0', headline: true, serverPrefix: cpu0, clientPrefix: cpu0 });
    const fifo = ['chrt', '-f', '10', ...cpu0];
    if (runs([...fifo, 'true'])) {
      configs.push({
        name: 'same CPU, SCHED_FIFO',
        description: 'both under chrt -f 10 taskset -c 0, as in the doc; for reference',
        headline: false,
        serverPrefix: fifo,
        clientPrefix: fifo,
      });
    } else {
      skipped.push('same CPU, SCHED_FIFO: chrt -f is not permitted here');
    }
    if (cpus().length >= 2) {
      configs.push({
        name: 'cross CPU',
        description: 'server under taskset -c 0, client under taskset -c 1',
        headline: false,
        serverPrefix: cpu0,
        clientPrefix: ['taskset', '-c', '1'],
      });
    } else {
      skipped.push('cross CPU: only one CPU');
    }
  } else {
    skipped.push('same CPU and cross CPU: taskset is not available');
  }
  configs.push({
    name: 'unpinned',
    description: 'the scheduler places server and client; a mixture of same- and cross-CPU runs',
    headline: configs.length === 0,
    serverPrefix: [],
    clientPrefix: [],
  });

  const dir = mkdtempSync(join(tmpdir(), 'mediated-bench-'));
  const loadBefore = loadavg();
  const collected = configs.map(() => ({
    samples: { floor: [] as Float64Array[], blocking: [] as Float64Array[], addon: [] as Float64Array[], ours: [] as Float64Array[] },
    rounds: [] as Record<ServerKind, Summary>[],
    gcs: [] as string[],
  }));
  try {
    for (let r = 0; r < opts.rounds; r++) {
      // Rotate the order of configurations and servers every round so that neither drift in
      // background load nor "who runs first" favours one side.
      for (let ci = 0; ci < configs.length; ci++) {
        const cIdx = (ci + r) % configs.length;
        const config = configs[cIdx] as Config;
        const acc = collected[cIdx] as (typeof collected)[number];
        const round = {} as Record<ServerKind, Summary>;
        for (let k = 0; k < KINDS.length; k++) {
          const kind = KINDS[(k + r) % KINDS.length] as ServerKind;
          const { samples, gc } = await measureOnce(tools, kind, config, dir, opts);
          acc.samples[kind].push(samples);
          round[kind] = summarize(samples);
          if (gc) acc.gcs.push(gc);
        }
        acc.rounds.push(round);
        opts.progress(
          `latency: round ${r + 1}/${opts.rounds} ${config.name}: median floor ${us(round.floor.median)} µs, ours ${us(round.ours.median)} µs (${ratio(round.ours.median, round.floor.median)})`,
        );
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const results: ConfigResult[] = configs.map((config, i) => {
    const acc = collected[i] as (typeof collected)[number];
    const pooled = {
      floor: summarize(concat(acc.samples.floor)),
      blocking: summarize(concat(acc.samples.blocking)),
      addon: summarize(concat(acc.samples.addon)),
      ours: summarize(concat(acc.samples.ours)),
    };
    const medianRatio = pooled.ours.median / pooled.floor.median;
    const p99Ratio = pooled.ours.p99 / pooled.floor.p99;
    return {
      name: config.name,
      description: config.description,
      headline: config.headline,
      pooled,
      rounds: acc.rounds,
      medianRatio,
      p99Ratio,
      medianPass: medianRatio <= TARGET_MEDIAN,
      p99Pass: p99Ratio <= TARGET_P99,
      gcs: acc.gcs,
    };
  });
  return {
    node: process.version,
    cpu: cpuModel(),
    cpus: cpus().length,
    kernel: release(),
    loadBefore,
    loadAfter: loadavg(),
    options: { rounds: opts.rounds, samples: opts.samples, warmup: opts.warmup },
    configs: results,
    skipped,
    seconds: (performance.now() - t0) / 1000,
  };
}

const us = (ns: number): string => (ns / 1000).toFixed(2);
const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;
const pad = (s: string, n: number): string => s.padStart(n);

export function formatLatencyReport(r: LatencyReport): string {
  const o = r.options;
  const lines: string[] = [];
  lines.push('REGION_READ latency: 4-byte read of a trapped BAR0 register through the full server, vs a C echo (same socket type)');
  lines.push(`Node ${r.node}; CPU: ${r.cpu} (${r.cpus} CPUs); Linux ${r.kernel}`);
  lines.push(
    `${o.rounds} rounds x ${o.samples} samples per server (+${o.warmup} warm-up each), order rotated per round; ` +
      `load average ${r.loadBefore.map((x) => x.toFixed(2)).join(' ')} before, ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')} after; ${r.seconds.toFixed(1)} s`,
  );
  const busiest = Math.max(r.loadBefore[0] ?? 0, r.loadAfter[0] ?? 0);
  if (busiest > r.cpus) {
    lines.push(
      `warning: 1-minute load average ${busiest.toFixed(2)} exceeds the ${r.cpus} CPUs: other work shared the CPUs, tails (p99 and up) are unreliable`,
    );
  }
  const headline = r.configs.find((c) => c.headline);
  for (const c of [...r.configs].sort((a, b) => Number(b.headline) - Number(a.headline))) {
    lines.push('');
    lines.push(`${c.name} (${c.description})${c.headline ? '  [headline]' : ''}`);
    lines.push(`  ${'µs'.padEnd(27)}${pad('median', 9)}${pad('p90', 9)}${pad('p99', 10)}${pad('p99.9', 10)}${pad('mean', 9)}${pad('max', 11)}`);
    for (const k of KINDS) {
      const s = c.pooled[k];
      lines.push(
        `  ${KIND_LABEL[k].padEnd(27)}${pad(us(s.median), 9)}${pad(us(s.p90), 9)}${pad(us(s.p99), 10)}${pad(us(s.p999), 10)}${pad(us(s.mean), 9)}${pad(us(s.max), 11)}`,
      );
    }
    const verdict = (ok: boolean): string => (ok ? 'PASS' : 'MISS');
    lines.push(
      `  ratio ours/floor: median ${ratio(c.pooled.ours.median, c.pooled.floor.median)} (target <= ${TARGET_MEDIAN}x) ${verdict(c.medianPass)}; ` +
        `p99 ${ratio(c.pooled.ours.p99, c.pooled.floor.p99)} (target <= ${TARGET_P99}x) ${verdict(c.p99Pass)}`,
    );
    const p = c.pooled;
    lines.push(
      `  ratio ours/blocking: median ${ratio(p.ours.median, p.blocking.median)}, p99 ${ratio(p.ours.p99, p.blocking.p99)}; ` +
        `addon-only/floor: median ${ratio(p.addon.median, p.floor.median)}, p99 ${ratio(p.addon.p99, p.floor.p99)}`,
    );
    lines.push(
      `  median overhead over the floor: ${us(p.ours.median - p.floor.median)} µs = ${us(p.addon.median - p.floor.median)} Node + addon ` +
        `+ ${us(p.ours.median - p.addon.median)} our layers (connection, session, codec, device)`,
    );
    lines.push(
      `  per round ours/floor median: ${c.rounds.map((x) => ratio(x.ours.median, x.floor.median)).join(' ')}; p99: ${c.rounds.map((x) => ratio(x.ours.p99, x.floor.p99)).join(' ')}`,
    );
    if (c.gcs.length) lines.push(`  our server's GCs per round (${o.warmup + o.samples} round trips): ${c.gcs.join(' | ')}`);
  }
  for (const s of r.skipped) lines.push(`skipped: ${s}`);
  if (headline) {
    lines.push('');
    const ok = headline.medianPass && headline.p99Pass;
    lines.push(
      `${ok ? 'PASS' : 'MISS'} (${headline.name}): median ${us(headline.pooled.ours.median)} µs = ${headline.medianRatio.toFixed(2)}x floor ` +
        `[${headline.medianPass ? 'PASS' : 'MISS'} <= ${TARGET_MEDIAN}x], p99 ${us(headline.pooled.ours.p99)} µs = ${headline.p99Ratio.toFixed(2)}x floor ` +
        `[${headline.p99Pass ? 'PASS' : 'MISS'} <= ${TARGET_P99}x]`,
    );
  }
  return lines.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const report = await runLatencyBenchmark(latencyOptionsFromEnv(process.argv.slice(2)));
  process.stdout.write(`${formatLatencyReport(report)}\n`);
}
