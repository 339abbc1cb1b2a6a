// Shared pieces of the vGPU benchmarks (bench/vgpu*.ts): statistics, a `mediated` daemon run as
// its own process (as deployed), DISPI mode programming, and small timing helpers.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { fileURLToPath } from 'node:url';
import { ControlClient } from '../src/daemon/control-client.js';
import { Daemon, type DaemonOptions, defaultConfig } from '../src/daemon/daemon.js';
import { controlSocket } from '../src/daemon/paths.js';
import { DISPI } from '../src/devices/vgpu/bochs-vgpu.js';

/** Latency/duration summary; percentiles are nearest-rank (like bench/latency.ts). */
export interface Summary {
  n: number;
  min: number;
  median: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

export function summarize(values: ArrayLike<number>): Summary {
  const s = Float64Array.from(values).sort();
  const n = s.length;
  if (n === 0) return { n: 0, min: Number.NaN, median: Number.NaN, p90: Number.NaN, p99: Number.NaN, mean: Number.NaN, max: Number.NaN };
  const rank = (p: number): number => s[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))] as number;
  let sum = 0;
  for (const v of s) sum += v;
  return { n, min: s[0] as number, median: rank(0.5), p90: rank(0.9), p99: rank(0.99), mean: sum / n, max: s[n - 1] as number };
}

/** The statistical median (mean of the two middle values for an even count); NaN when empty. */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const n = s.length;
  if (n === 0) return Number.NaN;
  return n % 2 ? (s[(n - 1) >> 1] as number) : ((s[n / 2 - 1] as number) + (s[n / 2] as number)) / 2;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Milliseconds on a monotonic clock. */
export const nowMs = (): number => performance.now();

export interface Machine {
  node: string;
  cpu: string;
  cpus: number;
  kernel: string;
  load: number[];
}

export function machine(): Machine {
  const c = cpus();
  return { node: process.version, cpu: c[0]?.model ?? '?', cpus: c.length, kernel: release(), load: loadavg() };
}

export const fmtLoad = (l: number[]): string => l.map((x) => x.toFixed(2)).join(' ');

/** The DISPI register writes of a mode set (what the bochs driver does), as [index, value]. */
export function modeSetWrites(width: number, height: number, bpp: number): [number, number][] {
  return [
    [DISPI.ENABLE, 0],
    [DISPI.XRES, width],
    [DISPI.YRES, height],
    [DISPI.BPP, bpp],
    [DISPI.VIRT_WIDTH, width],
    [DISPI.VIRT_HEIGHT, height],
    [DISPI.X_OFFSET, 0],
    [DISPI.Y_OFFSET, 0],
    [DISPI.ENABLE, 0x41], // ENABLED | LFB_ENABLED
  ];
}

/** BAR2 offset of DISPI register `index`, and its 16-bit little-endian value. */
export function dispiAccess(index: number, value: number): { offset: number; data: Uint8Array } {
  return { offset: 0x500 + 2 * index, data: Uint8Array.of(value & 0xff, (value >> 8) & 0xff) };
}

const live = new Set<ChildProcess>();
let hookInstalled = false;
function killLiveOnExit(child: ChildProcess): void {
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (hookInstalled) return;
  hookInstalled = true;
  process.on('exit', () => {
    for (const c of live) c.kill('SIGKILL');
  });
}

/** A `mediated` daemon in its own Node process (`cli.js daemon`), with a connected client. */
export interface DaemonProcess {
  readonly client: ControlClient;
  readonly controlPath: string;
  readonly pid: number;
  /** The daemon's stderr so far (its log). */
  stderr(): string;
  /** Closes the client, SIGTERMs the daemon and waits for it (SIGKILL after 5 s). Idempotent. */
  stop(): Promise<void>;
}

/** `mediated daemon` in its own Node process; `extraArgs` go to the daemon verb (e.g. --http off). */
export async function spawnDaemon(runDir: string, stateDir: string, timeoutMs = 15_000, extraArgs: readonly string[] = []): Promise<DaemonProcess> {
  const cli = fileURLToPath(new URL('../src/daemon/cli.js', import.meta.url));
  const child = spawn(process.execPath, [cli, 'daemon', '--run-dir', runDir, '--state-dir', stateDir, ...extraArgs], { stdio: ['ignore', 'ignore', 'pipe'] });
  killLiveOnExit(child);
  let err = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    err = (err + s).slice(-20_000);
  });
  const exited = new Promise<void>((res) => {
    if (child.exitCode !== null || child.signalCode !== null) res();
    else child.once('exit', () => res());
  });
  const controlPath = controlSocket(runDir);
  const deadline = nowMs() + timeoutMs;
  let client: ControlClient | null = null;
  try {
    while (!client) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new Error(`the daemon exited (${child.exitCode ?? child.signalCode}) while starting:\n${err}`);
      if (existsSync(controlPath)) {
        try {
          const c = new ControlClient(controlPath);
          await c.call('ping');
          client = c;
          break;
        } catch {
          // not listening yet
        }
      }
      if (nowMs() > deadline) throw new Error(`the daemon did not answer on ${controlPath} within ${timeoutMs} ms:\n${err}`);
      await sleep(50);
    }
  } catch (e) {
    child.kill('SIGKILL');
    await exited;
    throw e;
  }
  const c = client;
  let stopping: Promise<void> | null = null;
  return {
    client: c,
    controlPath,
    pid: child.pid as number,
    stderr: () => err,
    stop: () => {
      stopping ??= (async () => {
        c.close();
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(t);
      })();
      return stopping;
    },
  };
}

/** A daemon for this process (default parent, silent log, no browser viewer where it offers one). */
export function inProcessDaemon(runDir: string, stateDir: string): Daemon {
  // Not a literal: a daemon without the `http` option ignores it.
  const options: DaemonOptions & { http?: null } = { runDir, stateDir, config: defaultConfig(), log: () => {}, http: null };
  return new Daemon(options);
}

/**
 * Runs `fn`, rejecting if it takes longer than `ms`. The work itself is not cancelled (the caller's
 * cleanup, e.g. closing the connection it waits on, ends it); its late failure is ignored.
 */
export async function withTimeout<T>(what: string, ms: number, fn: () => Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const work = fn();
  work.catch(() => {});
  try {
    return await Promise.race([
      work,
      new Promise<never>((_, rej) => {
        timer = setTimeout(() => rej(new Error(`${what} did not finish within ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    if (timer) clearTimeout(timer);
  }
}

export const us = (ns: number): string => (ns / 1000).toFixed(2);
export const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}x`;
export const verdict = (ok: boolean): string => (ok ? 'PASS' : 'MISS');
