// Plane query latency through the management socket: round trip of the control op 'plane-query'
// (QUERY_GFX_PLANE's userspace form) for a vGPU showing a 1280x800 XRGB8888 plane, against the
// socket floor, the no-op op 'ping', measured in the same run by the same client. One request in
// flight at a time; each sample is one `await client.call(...)` timed with hrtime.
//
// Configurations:
//   process     the daemon in its own Node process (`cli.js daemon`, as deployed); the plane is
//               programmed over vfio-user (REGION_WRITEs to the DISPI registers in BAR2, as a
//               guest driver's MMIO would arrive). The headline.
//   in-process  the daemon in the benchmark's own process (as the tests run it); the plane is
//               programmed with BochsVgpu.regionWrite. Client and daemon share one event loop,
//               so there is no cross-process wake-up. Reported for reference.
// Samples are taken in blocks that alternate ping / plane-query (order flipped every block),
// after a warm-up of both.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ControlClient } from '../src/daemon/control-client.js';
import type { BochsVgpu } from '../src/devices/vgpu/bochs-vgpu.js';
import { DrmFormat, type PlaneInfo } from '../src/display/plane.js';
import { VfioUserClient } from '../src/vfio-user/client.js';
import {
  type DaemonProcess,
  dispiAccess,
  inProcessDaemon,
  type Machine,
  machine,
  modeSetWrites,
  nowMs,
  ratio,
  type Summary,
  spawnDaemon,
  summarize,
  us,
  verdict,
  withTimeout,
} from './vgpu-common.js';

export interface PlaneQueryOptions {
  /** Measured queries per op (split over `blocks`). */
  samples: number;
  /** Unmeasured calls of each op first. */
  warmup: number;
  /** Alternating blocks per op. */
  blocks: number;
  /** Also measure the in-process daemon. */
  inProcess: boolean;
  /** Limit for each configuration. */
  configTimeoutMs: number;
  progress: (message: string) => void;
}

export const PLANE_QUERY_TARGET_US = 50;

export function defaultPlaneQueryOptions(): PlaneQueryOptions {
  return { samples: 20_000, warmup: 5_000, blocks: 10, inProcess: true, configTimeoutMs: 60_000, progress: () => {} };
}

export interface PlaneQueryConfig {
  name: 'process' | 'process, same CPU' | 'in-process';
  description: string;
  headline: boolean;
  /** Latencies in ns. */
  ping: Summary;
  plane: Summary;
  /** Per block median, ns. */
  blockMedians: { ping: number[]; plane: number[] };
  /** plane-query median − ping median, ns: the cost of the op itself. */
  opCostNs: number;
}

export interface PlaneQueryReport {
  options: Omit<PlaneQueryOptions, 'progress'>;
  machine: Machine;
  loadAfter: number[];
  plane: PlaneInfo;
  configs: PlaneQueryConfig[];
  pass: boolean;
  seconds: number;
}

const W = 1280;
const H = 800;

async function measure(
  client: ControlClient,
  uuid: string,
  o: PlaneQueryOptions,
  name: PlaneQueryConfig['name'],
): Promise<Omit<PlaneQueryConfig, 'description' | 'headline'>> {
  const args = { uuid };
  const call = (op: 'ping' | 'plane-query') => (op === 'ping' ? client.call('ping') : client.call('plane-query', args));
  for (let i = 0; i < o.warmup; i++) {
    await call('ping');
    await call('plane-query');
  }
  const per = Math.ceil(o.samples / o.blocks);
  const ping = new Float64Array(per * o.blocks);
  const plane = new Float64Array(per * o.blocks);
  const blockMedians = { ping: [] as number[], plane: [] as number[] };
  for (let b = 0; b < o.blocks; b++) {
    const order = b % 2 === 0 ? (['ping', 'plane-query'] as const) : (['plane-query', 'ping'] as const);
    for (const op of order) {
      const into = op === 'ping' ? ping : plane;
      const base = b * per;
      for (let i = 0; i < per; i++) {
        const t = process.hrtime.bigint();
        await call(op);
        into[base + i] = Number(process.hrtime.bigint() - t);
      }
      (op === 'ping' ? blockMedians.ping : blockMedians.plane).push(summarize(into.subarray(base, base + per)).median);
    }
    o.progress(`plane-query [${name}]: block ${b + 1}/${o.blocks}`);
  }
  const sp = summarize(ping);
  const sq = summarize(plane);
  return { name, ping: sp, plane: sq, blockMedians, opCostNs: sq.median - sp.median };
}

function checkPlane(p: PlaneInfo): void {
  if (p.drm_format !== DrmFormat.XRGB8888 || p.width !== W || p.height !== H || p.stride !== W * 4) {
    throw new Error(`the programmed plane reads back as ${p.width}x${p.height} format 0x${p.drm_format.toString(16)} stride ${p.stride}`);
  }
}

type Cleanups = (() => Promise<void> | void)[];

/** CPU affinity of a process as taskset prints it (hex mask), to restore it afterwards. */
function affinity(pid: number): string | null {
  const r = spawnSync('taskset', ['-p', String(pid)], { encoding: 'utf8' });
  return r.status === 0 ? (/:\s*([0-9a-f]+)\s*$/.exec(r.stdout.trim())?.[1] ?? null) : null;
}

function setAffinity(pid: number, mask: string): boolean {
  return spawnSync('taskset', ['-p', mask, String(pid)], { stdio: 'ignore' }).status === 0;
}

/**
 * The daemon in its own process. With `pin`, daemon and benchmark share CPU 0: on these 2-vCPU VMs a
 * cross-CPU wake-up alone costs 25-90 µs and varies run to run, which would swamp what we measure.
 */
async function processConfig(dir: string, o: PlaneQueryOptions, cleanups: Cleanups, pin = false): Promise<{ cfg: PlaneQueryConfig; plane: PlaneInfo }> {
  let daemon: DaemonProcess | null = null;
  const ownMask = pin ? affinity(process.pid) : null;
  try {
    daemon = await spawnDaemon(join(dir, pin ? 'run-pinned' : 'run'), join(dir, pin ? 'state-pinned' : 'state'));
    if (pin && !(ownMask && setAffinity(daemon.pid, '1') && setAffinity(process.pid, '1'))) throw new Error('taskset could not pin the processes');
    cleanups.push((daemon as DaemonProcess).stop);
    const { uuid, socket } = await daemon.client.call<{ uuid: string; socket: string }>('start', { parent: 'mediated0', type: 'mediated-bochs-medium' });
    // Program the mode over vfio-user, as the guest's MMIO would arrive; the registers keep their
    // values after the client disconnects.
    const vfu = await VfioUserClient.connect(socket);
    try {
      for (const [i, v] of modeSetWrites(W, H, 32)) {
        const a = dispiAccess(i, v);
        await vfu.regionWrite(2, a.offset, a.data);
      }
    } finally {
      vfu.close();
    }
    const plane = await daemon.client.call<PlaneInfo>('plane-query', { uuid });
    checkPlane(plane);
    const m = await measure(daemon.client, uuid, o, pin ? 'process, same CPU' : 'process');
    return {
      cfg: {
        ...m,
        description: pin ? 'daemon in its own process, both pinned to CPU 0 (taskset)' : 'daemon in its own process, client in the benchmark process, unpinned',
        headline: pin,
      },
      plane,
    };
  } finally {
    if (ownMask) setAffinity(process.pid, ownMask);
    await daemon?.stop();
  }
}

async function inProcessConfig(dir: string, o: PlaneQueryOptions, cleanups: Cleanups): Promise<PlaneQueryConfig> {
  const daemon = inProcessDaemon(join(dir, 'run-in'), join(dir, 'state-in'));
  let client: ControlClient | null = null;
  cleanups.push(async () => {
    client?.close();
    await daemon.stop();
  });
  try {
    await daemon.start();
    client = new ControlClient(daemon.controlPath);
    const { uuid } = await client.call<{ uuid: string }>('start', { parent: 'mediated0', type: 'mediated-bochs-medium' });
    const vgpu = daemon.core.instance(uuid)?.device?.backend as BochsVgpu;
    for (const [i, v] of modeSetWrites(W, H, 32)) {
      const a = dispiAccess(i, v);
      vgpu.regionWrite(2, a.offset, a.data);
    }
    checkPlane(await client.call<PlaneInfo>('plane-query', { uuid }));
    const m = await measure(client, uuid, o, 'in-process');
    return { ...m, description: 'daemon and client share one process and event loop', headline: false };
  } finally {
    client?.close();
    await daemon.stop();
  }
}

export async function runPlaneQueryBenchmark(options: Partial<PlaneQueryOptions> = {}): Promise<PlaneQueryReport> {
  const o = { ...defaultPlaneQueryOptions(), ...options };
  if (!(o.samples >= 1 && o.blocks >= 1)) throw new RangeError('samples and blocks must be >= 1');
  const started = nowMs();
  const mach = machine();
  const dir = mkdtempSync(join(tmpdir(), 'mediated-bench-plane-'));
  // Stopping a configuration's daemon also ends a call stuck after a timeout.
  const cleanups: Cleanups = [];
  try {
    const pinned = await withTimeout('plane-query (daemon process, same CPU)', o.configTimeoutMs, () => processConfig(dir, o, cleanups, true));
    const { cfg: unpinned, plane } = await withTimeout('plane-query (daemon process)', o.configTimeoutMs, () => processConfig(dir, o, cleanups));
    const cfg = pinned.cfg;
    const configs = [cfg, unpinned];
    if (o.inProcess) configs.push(await withTimeout('plane-query (in-process)', o.configTimeoutMs, () => inProcessConfig(dir, o, cleanups)));
    const { progress: _, ...opts } = o;
    return {
      options: opts,
      machine: mach,
      loadAfter: machine().load,
      plane,
      configs,
      pass: cfg.plane.median <= PLANE_QUERY_TARGET_US * 1000,
      seconds: (nowMs() - started) / 1000,
    };
  } finally {
    for (const c of cleanups) await c();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatPlaneQueryReport(r: PlaneQueryReport): string {
  const o = r.options;
  const L: string[] = [];
  const p = r.plane;
  L.push(`Plane query latency over the management socket (ControlClient.call, one in flight), plane ${p.width}x${p.height} XRGB8888 stride ${p.stride}`);
  L.push(
    `${o.samples} samples per op in ${o.blocks} alternating blocks (+${o.warmup} warm-up each); ` +
      `load ${r.machine.load.map((x) => x.toFixed(2)).join(' ')} before, ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')} after; ${r.seconds.toFixed(1)} s`,
  );
  const pad = (x: string, n: number): string => x.padStart(n);
  for (const c of r.configs) {
    L.push('');
    L.push(`${c.name} (${c.description})${c.headline ? '  [headline]' : ''}`);
    L.push(`  ${'µs'.padEnd(22)}${pad('median', 8)}${pad('p90', 8)}${pad('p99', 8)}${pad('mean', 8)}${pad('min', 8)}${pad('max', 9)}`);
    for (const [label, s] of [
      ['ping (socket floor)', c.ping],
      ['plane-query', c.plane],
    ] as const) {
      L.push(
        `  ${label.padEnd(22)}${pad(us(s.median), 8)}${pad(us(s.p90), 8)}${pad(us(s.p99), 8)}${pad(us(s.mean), 8)}${pad(us(s.min), 8)}${pad(us(s.max), 9)}`,
      );
    }
    L.push(
      `  plane-query/ping: median ${ratio(c.plane.median, c.ping.median)}, p99 ${ratio(c.plane.p99, c.ping.p99)}; op cost over the floor ${us(c.opCostNs)} µs (median)`,
    );
    L.push(`  per block median µs, ping: ${c.blockMedians.ping.map(us).join(' ')}`);
    L.push(`  per block median µs, plane-query: ${c.blockMedians.plane.map(us).join(' ')}`);
  }
  const h = r.configs.find((c) => c.headline) as PlaneQueryConfig;
  L.push('');
  L.push(
    `${verdict(r.pass)} (${h.name}): plane-query median ${us(h.plane.median)} µs (target <= ${PLANE_QUERY_TARGET_US} µs), p99 ${us(h.plane.p99)} µs; ping floor median ${us(h.ping.median)} µs`,
  );
  return L.join('\n');
}
