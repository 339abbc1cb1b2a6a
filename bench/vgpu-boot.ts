// Boot to a drawn framebuffer: the tiny 6.12 guest boots under TCG, binds bochs-drm, modesets
// and writes a 1280x800 XRGB8888 test pattern to /dev/fb0 in one write(). Measured: wall time
// from QEMU spawn until the whole pattern is in the device's VRAM, with
//   ours  our vGPU (mediated-bochs-medium) served over vfio-user by a `mediated` daemon running
//         as its own process, VRAM checked through the buffer export (plane-query, buffer-export,
//         mmap of the fd) — the way a display consumer sees it;
//   qemu  QEMU's built-in `-device bochs-display,rombar=0` (no vfio-user), VRAM checked through
//         HMP `screendump` (PPM) on a `-monitor unix:` socket.
// Both are checked the same way: every `pollMs` the picture is fetched, converted to packed RGB
// and compared byte for byte with the pattern's RGB (so 0 of 1,024,000 pixels may differ).
// Polling starts when the guest reports /dev/fb0 (nothing can be drawn earlier), so the checks do
// not load the machine during the kernel boot. Runs alternate ours/qemu (the order flips every
// round) after one discarded warm-up boot; a fresh vGPU instance (zeroed VRAM) per run. No new
// round starts once it would likely end past `budgetMs` (the report says so).
//
// The guest prints `T: <marker> <uptime>` for init (modules loaded), fb0, modeset and written
// (the dd returned); those guest-side times do not depend on the polling granularity.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mapCurrentBuffer } from '../src/daemon/consumer.js';
import type { ControlClient } from '../src/daemon/control-client.js';
import { rowToRgb } from '../src/display/convert.js';
import { DrmFormat, type PlaneInfo } from '../src/display/plane.js';
import { xrgbPattern } from '../test/harness/patterns.js';
import { bootGuest, type Guest, loadTestEnv } from '../test/harness/qemu.js';
import { type DaemonProcess, fmtLoad, type Machine, machine, median, nowMs, sleep, spawnDaemon, withTimeout } from './vgpu-common.js';

export interface BootBenchOptions {
  /** Alternating rounds; each round boots once with ours and once with QEMU's device. */
  rounds: number;
  /** One discarded boot first (page cache, QEMU binary, guest files). */
  warmup: boolean;
  /** Picture check period. */
  pollMs: number;
  /** Limit of one boot from spawn to the matched picture. */
  runTimeoutMs: number;
  /** Guest (manifest key) — the 6.12 generation by default. */
  guest: string;
  /** No new round starts when it would likely end after this many ms from the start. */
  budgetMs: number;
  progress: (message: string) => void;
}

export const BOOT_TARGET_RATIO = 1.05;

export function defaultBootOptions(): BootBenchOptions {
  return { rounds: 4, warmup: true, pollMs: 100, runTimeoutMs: 45_000, guest: '6.12', budgetMs: 140_000, progress: () => {} };
}

export type BootKind = 'ours' | 'qemu';
export const MARKERS = ['init', 'fb0', 'modeset', 'written'] as const;
export type Marker = (typeof MARKERS)[number];

export interface BootRun {
  kind: BootKind;
  round: number;
  /** ms from spawn until a check found the full pattern (the moment that picture was obtained). */
  drawnMs: number;
  /** Guest uptime (s) printed with each marker. */
  uptime: Record<Marker, number>;
  /** ms from spawn until each marker reached the host (serial console). */
  seenMs: Record<Marker, number>;
  /** Checks made; the mean time one check took (fetch + convert + compare), ms. */
  checks: number;
  checkMs: number;
}

export interface BootKindSummary {
  drawnMs: number;
  uptime: Record<Marker, number>;
  seenMs: Record<Marker, number>;
  /** Spawn to kernel start (estimated from the fb0 marker). */
  preKernelMs: number;
  /** Guest-side: uptime at "written" minus uptime at "init". */
  initToWrittenMs: number;
  /** drawn minus the host seeing "written". */
  lagMs: number;
  checkMs: number;
}

export interface BootReport {
  options: Omit<BootBenchOptions, 'progress'>;
  machine: Machine;
  loadAfter: number[];
  qemuVersion: string;
  kernelVersion: string;
  runs: BootRun[];
  warmupMs: number | null;
  /** Why fewer rounds than asked were run (time budget), or null. */
  stoppedEarly: string | null;
  median: Record<BootKind, BootKindSummary>;
  /** median drawn time ours / QEMU (the headline). */
  ratio: number;
  /** median guest uptime at "written" ours / QEMU. */
  guestWrittenRatio: number;
  /** per round drawn ours / QEMU. */
  roundRatios: number[];
  pass: boolean;
  seconds: number;
}

const W = 1280;
const H = 800;

// /init has loaded the bochs module chain and printed "T: init"; this is /test.sh.
const SCRIPT = `
up() { cut -d' ' -f1 /proc/uptime; }
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n+1)); done
echo "T: fb0 $(up) $(cat /sys/class/graphics/fb0/virtual_size 2>/dev/null)"
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
echo "T: modeset $(up)"
dd if=/p.raw of=/dev/fb0 bs=$(stat -c %s /p.raw) count=1 2>/dev/null
echo "T: written $(up)"
read go
`;

/** A minimal HMP client on QEMU's `-monitor unix:PATH,server=on,wait=off` socket. */
class Hmp {
  private buf = '';
  private closed = false;
  private wake: (() => void) | null = null;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => {
      this.buf += s;
      this.wake?.();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake?.();
    });
    sock.on('error', () => {});
  }

  static async connect(path: string, timeoutMs: number): Promise<Hmp> {
    const deadline = nowMs() + timeoutMs;
    for (;;) {
      const sock = await new Promise<Socket | null>((res) => {
        const s = createConnection(path);
        s.once('connect', () => res(s));
        s.once('error', () => {
          s.destroy();
          res(null);
        });
      });
      if (sock) {
        const m = new Hmp(sock);
        await m.prompt(Math.max(1000, deadline - nowMs()));
        return m;
      }
      if (nowMs() > deadline) throw new Error(`QEMU monitor ${path} did not accept a connection within ${timeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Waits for the "(qemu) " prompt; returns and consumes what came before it. */
  private async prompt(timeoutMs: number): Promise<string> {
    const deadline = nowMs() + timeoutMs;
    while (!this.buf.endsWith('(qemu) ')) {
      if (this.closed) throw new Error('QEMU monitor closed');
      const left = deadline - nowMs();
      if (left <= 0) throw new Error(`no QEMU monitor prompt within ${timeoutMs} ms (got ${JSON.stringify(this.buf.slice(-200))})`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.wake = () => {
          clearTimeout(t);
          res();
        };
      });
      this.wake = null;
    }
    const out = this.buf;
    this.buf = '';
    return out;
  }

  async command(cmd: string, timeoutMs = 10_000): Promise<string> {
    if (this.closed) throw new Error('QEMU monitor closed');
    this.sock.write(`${cmd}\n`);
    return this.prompt(timeoutMs);
  }

  close(): void {
    this.sock.destroy();
  }
}

/** Parses a binary PPM (P6, maxval 255) into packed RGB. */
export function parsePpm(b: Buffer): { width: number; height: number; rgb: Buffer } {
  let at = 0;
  const token = (): string => {
    for (;;) {
      while (at < b.length && /\s/.test(String.fromCharCode(b[at] as number))) at++;
      if (b[at] !== 0x23) break; // '#' comment to end of line
      while (at < b.length && b[at] !== 0x0a) at++;
    }
    const start = at;
    while (at < b.length && !/\s/.test(String.fromCharCode(b[at] as number))) at++;
    return b.toString('latin1', start, at);
  };
  if (token() !== 'P6') throw new Error('not a binary PPM (P6)');
  const width = Number(token());
  const height = Number(token());
  const maxval = Number(token());
  at++; // the single whitespace after maxval
  if (!(width > 0 && height > 0) || maxval !== 255) throw new Error(`unsupported PPM ${width}x${height} maxval ${maxval}`);
  const size = width * height * 3;
  if (b.length - at < size) throw new Error(`truncated PPM: ${b.length - at} of ${size} pixel bytes`);
  return { width, height, rgb: b.subarray(at, at + size) };
}

/** Packed RGB of the 1280x800 XRGB8888 plane in the instance's exported VRAM, or null if there is none yet. */
async function ourPicture(client: ControlClient, uuid: string, out: Buffer): Promise<Buffer | null> {
  const plane = await client.call<PlaneInfo>('plane-query', { uuid });
  if (plane.drm_format !== DrmFormat.XRGB8888 || plane.width !== W || plane.height !== H) return null;
  let m: Awaited<ReturnType<typeof mapCurrentBuffer>>;
  try {
    m = await mapCurrentBuffer(client, uuid);
  } catch {
    return null; // the plane changed between query and export
  }
  try {
    const d = m.descriptor;
    if (d.drm_format !== DrmFormat.XRGB8888 || d.width !== W || d.height !== H) return null;
    for (let y = 0; y < H; y++) rowToRgb(d.drm_format, m.bytes, d.offset + y * d.stride, W, out, y * W * 3);
    return out;
  } finally {
    await m.close();
  }
}

async function qemuPicture(mon: Hmp, file: string): Promise<Buffer | null> {
  rmSync(file, { force: true });
  const reply = await mon.command(`screendump ${file}`);
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch {
    throw new Error(`screendump wrote no file: ${JSON.stringify(reply.slice(-300))}`);
  }
  const p = parsePpm(data);
  return p.width === W && p.height === H ? p.rgb : null;
}

function diffCount(a: Uint8Array, b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < b.length; i += 3) if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) n++;
  return n;
}

interface Ctx {
  dir: string;
  daemon: DaemonProcess;
  pattern: { raw: Buffer; rgb: Buffer };
  o: BootBenchOptions;
  seq: number;
}

async function bootOnce(ctx: Ctx, kind: BootKind, round: number): Promise<BootRun> {
  const { o, daemon } = ctx;
  const n = ++ctx.seq;
  const workDir = join(ctx.dir, `run-${n}`);
  const monPath = join(ctx.dir, `mon-${n}.sock`);
  const shot = join(ctx.dir, `shot-${n}.ppm`);
  let instance: { uuid: string; socket: string } | null = null;
  let guest: Guest | null = null;
  let mon: Hmp | null = null;
  try {
    if (kind === 'ours') {
      instance = await withTimeout('starting a vGPU', 15_000, () =>
        daemon.client.call<{ uuid: string; socket: string }>('start', { parent: 'mediated0', type: 'mediated-bochs-medium' }),
      );
    }
    const t0 = nowMs();
    guest = await bootGuest({
      guest: o.guest,
      workDir,
      script: SCRIPT,
      files: [{ path: '/p.raw', data: ctx.pattern.raw }],
      devices: instance ? [{ socket: instance.socket, id: 'gpu0' }] : [],
      extraDevices: kind === 'qemu' ? ['bochs-display,id=gpu0,rombar=0'] : [],
      qemuArgs: kind === 'qemu' ? ['-monitor', `unix:${monPath},server=on,wait=off`] : [],
      timeoutMs: o.runTimeoutMs + 10_000,
      waitTimeoutMs: o.runTimeoutMs,
    });
    const g = guest;
    const seenMs = {} as Record<Marker, number>;
    for (const m of MARKERS) {
      g.waitFor(new RegExp(`T: ${m} [^\n]*\n`), o.runTimeoutMs).then(
        () => {
          seenMs[m] = nowMs() - t0;
        },
        () => {},
      );
    }
    if (kind === 'qemu') mon = await Hmp.connect(monPath, 10_000);
    const fb0 = await g.waitFor(/T: fb0 \S+ ([^\n]*)\n/, o.runTimeoutMs);
    if (fb0[1] !== `${W},${H}`) throw new Error(`${kind}: the guest's fb0 is ${fb0[1]}, not ${W},${H}`);

    const out = Buffer.alloc(W * H * 3);
    const deadline = t0 + o.runTimeoutMs;
    let checks = 0;
    let checkTotal = 0;
    let drawnMs = -1;
    let last = 'no picture yet';
    while (drawnMs < 0) {
      const tick = nowMs();
      if (tick > deadline) throw new Error(`${kind}: the pattern was not in VRAM ${o.runTimeoutMs} ms after spawn (${last})\n${g.output().slice(-1500)}`);
      const pic = await withTimeout(`${kind}: a picture check`, 15_000, () =>
        kind === 'ours' ? ourPicture(daemon.client, instance?.uuid as string, out) : qemuPicture(mon as Hmp, shot),
      );
      const got = nowMs();
      checks++;
      if (pic?.equals(ctx.pattern.rgb)) {
        drawnMs = got - t0;
      } else {
        last = pic ? `${diffCount(pic, ctx.pattern.rgb)} of ${W * H} pixels differ` : `no ${W}x${H} picture`;
      }
      checkTotal += nowMs() - tick;
      if (drawnMs < 0) await sleep(Math.max(0, tick + o.pollMs - nowMs()));
    }
    // The guest printed "written" right after its write(); with a fast device the picture can be
    // complete before that line arrives.
    await g.waitFor(/T: written [^\n]*\n/, 10_000);
    await sleep(0); // let the marker callbacks run
    const uptime = {} as Record<Marker, number>;
    for (const m of MARKERS) {
      const mm = g.output().match(new RegExp(`T: ${m} ([0-9.]+)`));
      if (!mm) throw new Error(`${kind}: the guest printed no "T: ${m}" marker\n${g.output().slice(-1500)}`);
      uptime[m] = Number(mm[1]);
      seenMs[m] ??= Number.NaN;
    }
    return { kind, round, drawnMs, uptime, seenMs, checks, checkMs: checkTotal / checks };
  } finally {
    mon?.close();
    if (guest) {
      guest.kill();
      await guest.exited;
    }
    const uuid = instance?.uuid;
    if (uuid) await withTimeout('stopping the vGPU', 15_000, () => daemon.client.call('stop', { uuid })).catch(() => {});
    rmSync(workDir, { recursive: true, force: true });
    rmSync(shot, { force: true });
    rmSync(monPath, { force: true });
  }
}

function summarizeKind(runs: BootRun[]): BootKindSummary {
  const pick = (f: (r: BootRun) => number): number => median(runs.map(f));
  const uptime = {} as Record<Marker, number>;
  const seenMs = {} as Record<Marker, number>;
  for (const m of MARKERS) {
    uptime[m] = pick((r) => r.uptime[m]);
    seenMs[m] = pick((r) => r.seenMs[m]);
  }
  return {
    drawnMs: pick((r) => r.drawnMs),
    uptime,
    seenMs,
    preKernelMs: pick(preKernelMs),
    initToWrittenMs: pick((r) => (r.uptime.written - r.uptime.init) * 1000),
    lagMs: pick((r) => r.drawnMs - r.seenMs.written),
    checkMs: pick((r) => r.checkMs),
  };
}

/** Spawn to kernel start, estimated: when the host saw "T: fb0" minus the guest's uptime then. */
const preKernelMs = (r: BootRun): number => r.seenMs.fb0 - r.uptime.fb0 * 1000;

export async function runBootBenchmark(options: Partial<BootBenchOptions> = {}): Promise<BootReport> {
  const o = { ...defaultBootOptions(), ...options };
  if (!(o.rounds >= 1)) throw new RangeError('rounds must be >= 1');
  const env = loadTestEnv();
  const kernelVersion = env.guests[o.guest]?.kernelVersion ?? o.guest;
  const started = nowMs();
  const mach = machine();
  const dir = mkdtempSync(join(tmpdir(), 'mediated-bench-boot-'));
  let daemon: DaemonProcess | null = null;
  try {
    daemon = await spawnDaemon(join(dir, 'run'), join(dir, 'state'));
    const p = xrgbPattern(W, H, 0);
    const ctx: Ctx = { dir, daemon, pattern: { raw: p.raw, rgb: Buffer.from(p.rgb.buffer, p.rgb.byteOffset, p.rgb.length) }, o, seq: 0 };
    let warmupMs: number | null = null;
    if (o.warmup) {
      o.progress('boot: warm-up boot (qemu, discarded)');
      warmupMs = (await bootOnce(ctx, 'qemu', -1)).drawnMs;
    }
    const runs: BootRun[] = [];
    let stoppedEarly: string | null = null;
    let longestRound = 0;
    for (let r = 0; r < o.rounds; r++) {
      const elapsed = nowMs() - started;
      if (r > 0 && elapsed + longestRound > o.budgetMs) {
        stoppedEarly = `stopped after ${r} of ${o.rounds} rounds: the next round would exceed the ${(o.budgetMs / 1000).toFixed(0)} s budget`;
        break;
      }
      const t = nowMs();
      const order: BootKind[] = r % 2 === 0 ? ['ours', 'qemu'] : ['qemu', 'ours'];
      for (const kind of order) {
        const run = await bootOnce(ctx, kind, r);
        o.progress(
          `boot: round ${r + 1}/${o.rounds} ${kind}: pattern in VRAM ${(run.drawnMs / 1000).toFixed(2)} s after spawn (guest wrote it at ${run.uptime.written} s uptime)`,
        );
        runs.push(run);
      }
      longestRound = Math.max(longestRound, nowMs() - t);
    }
    const ours = summarizeKind(runs.filter((r) => r.kind === 'ours'));
    const qemu = summarizeKind(runs.filter((r) => r.kind === 'qemu'));
    const roundRatios: number[] = [];
    for (let r = 0; r < o.rounds; r++) {
      const a = runs.find((x) => x.round === r && x.kind === 'ours');
      const b = runs.find((x) => x.round === r && x.kind === 'qemu');
      if (a && b) roundRatios.push(a.drawnMs / b.drawnMs);
    }
    const ratio = ours.drawnMs / qemu.drawnMs;
    const { progress: _, ...opts } = o;
    return {
      options: opts,
      machine: mach,
      loadAfter: machine().load,
      qemuVersion: env.qemuVersion,
      kernelVersion,
      runs,
      warmupMs,
      stoppedEarly,
      median: { ours, qemu },
      ratio,
      guestWrittenRatio: ours.uptime.written / qemu.uptime.written,
      roundRatios,
      pass: ratio <= BOOT_TARGET_RATIO,
      seconds: (nowMs() - started) / 1000,
    };
  } finally {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const s = (ms: number): string => (ms / 1000).toFixed(2);
const x3 = (a: number, b: number): string => `${(a / b).toFixed(3)}x`;

export function formatBootReport(r: BootReport): string {
  const o = r.options;
  const L: string[] = [];
  const rounds = new Set(r.runs.map((x) => x.round)).size;
  L.push(
    `Boot to a drawn ${W}x${H} framebuffer: QEMU ${r.qemuVersion} (TCG), guest ${r.kernelVersion}; ours = vfio-user vGPU (mediated-bochs-medium, daemon process), qemu = built-in bochs-display`,
  );
  L.push(
    `${rounds} rounds alternating (order flipped per round)${r.warmupMs !== null ? `, 1 warm-up boot discarded (drawn at ${s(r.warmupMs)} s)` : ''}; ` +
      `check every ${o.pollMs} ms from "T: fb0" on (export+mmap vs HMP screendump, both to RGB, byte-compared with the pattern); ` +
      `load ${fmtLoad(r.machine.load)} before, ${fmtLoad(r.loadAfter)} after; ${r.seconds.toFixed(1)} s`,
  );
  if (r.stoppedEarly) L.push(`NOTE: ${r.stoppedEarly}`);
  L.push('');
  const cols: [string, number][] = [
    ['median (s)', 12],
    ['drawn', 8],
    ['pre-kernel', 11],
    ['up:init', 8],
    ['up:fb0', 8],
    ['up:written', 11],
    ['init->written', 14],
    ['drawn-"written"', 16],
    ['check ms', 10],
  ];
  L.push(`  ${cols.map(([c, w], i) => (i === 0 ? c.padEnd(w) : c.padStart(w))).join('')}`);
  for (const k of ['ours', 'qemu'] as const) {
    const m = r.median[k];
    const v = [
      s(m.drawnMs),
      s(m.preKernelMs),
      m.uptime.init.toFixed(2),
      m.uptime.fb0.toFixed(2),
      m.uptime.written.toFixed(2),
      s(m.initToWrittenMs),
      s(m.lagMs),
      m.checkMs.toFixed(1),
    ];
    L.push(`  ${k.padEnd(12)}${v.map((x, i) => x.padStart((cols[i + 1] as [string, number])[1])).join('')}`);
  }
  L.push(
    `  ${'ours/qemu'.padEnd(12)}${x3(r.median.ours.drawnMs, r.median.qemu.drawnMs).padStart(8)}${x3(r.median.ours.preKernelMs, r.median.qemu.preKernelMs).padStart(11)}` +
      `${x3(r.median.ours.uptime.init, r.median.qemu.uptime.init).padStart(8)}${x3(r.median.ours.uptime.fb0, r.median.qemu.uptime.fb0).padStart(8)}` +
      `${x3(r.median.ours.uptime.written, r.median.qemu.uptime.written).padStart(11)}${x3(r.median.ours.initToWrittenMs, r.median.qemu.initToWrittenMs).padStart(14)}`,
  );
  L.push(
    '  drawn = wall time from spawn to the first check that found the whole pattern; pre-kernel = host saw "T: fb0" minus the guest uptime it printed ' +
      '(firmware, kernel/initrd loading, device realize); up:* = guest uptime at the markers; drawn-"written" = drawn minus when the host saw "T: written" ' +
      '(negative: the picture was complete before the line arrived); check ms = one fetch+convert+compare',
  );
  L.push('');
  L.push('  runs (s):');
  for (const run of r.runs) {
    L.push(
      `    round ${run.round + 1} ${run.kind.padEnd(5)} drawn ${s(run.drawnMs)}  pre-kernel ${s(preKernelMs(run))}  up:init ${run.uptime.init.toFixed(2)}  ` +
        `up:fb0 ${run.uptime.fb0.toFixed(2)}  up:written ${run.uptime.written.toFixed(2)}  (host saw "written" at ${s(run.seenMs.written)}; ${run.checks} checks)`,
    );
  }
  L.push(`  per round ours/qemu (drawn): ${r.roundRatios.map((x) => `${x.toFixed(3)}x`).join(' ')}`);
  L.push('');
  L.push(
    `${r.pass ? 'PASS' : 'MISS'}: median spawn-to-drawn ours ${s(r.median.ours.drawnMs)} s vs qemu ${s(r.median.qemu.drawnMs)} s = ${r.ratio.toFixed(3)}x (target <= ${BOOT_TARGET_RATIO}x); ` +
      `guest-side uptime at "written" ${r.guestWrittenRatio.toFixed(3)}x, init->written ${x3(r.median.ours.initToWrittenMs, r.median.qemu.initToWrittenMs)}`,
  );
  return L.join('\n');
}
