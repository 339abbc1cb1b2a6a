// Remote-display benchmark: our VNC server (a vfio-user vGPU served by a `mediated` daemon
// process) against QEMU's built-in VNC server (QEMU's own `-device bochs-display`), same run,
// same tiny TCG guest (6.12 kernel) running the same shell-loop workload on /dev/fb0 at the same
// resolution, watched by the same noVNC-like measuring client (bench/vnc-client.ts, in a worker
// thread, decoding every rectangle with the reference decoders of the tests).
//
// Workloads (busybox sh in the guest, one fork of dd per step):
//   scroll  "scrolling text": the text area (rows 16..799) moves up by 16 rows (one text line) with
//           one dd from /dev/fb0 to /dev/fb0 and a new line is written at the bottom;
//   bar     "moving pattern": a 32-row striped bar (with 8 black rows above and below) bounces
//           up and down the screen 8 rows per step, one dd per step.
// Latency marker: every 200 ms of guest time the loop prints `MK <seq> <steps>` on the serial
// console (builtin echo) and right after writes 16 pixels at the start of row 0 (builtin printf, no
// fork; row 0 never changes otherwise) whose green channel carries a code. The main thread
// timestamps the console line as it arrives; the client timestamps the first decoded update that
// shows the code: latency = pixel - console line. Idle: after >= 30 s of no change with a viewer
// connected, the host asks the guest for one marker (several rounds).
//
// Per server and workload: a no-viewer window (CPU baseline and the guest's own step rate), then
// a viewer window in request mode (one incremental full-screen FBUR outstanding, like noVNC), and
// for ours a second one with ContinuousUpdates. Server CPU per viewer = CPU in the viewer window
// minus the no-viewer baseline (same workload): QEMU = main thread + vnc_worker from
// /proc/PID/task/*/schedstat (the vCPU thread running the guest is excluded); ours = the whole
// daemon process (all its threads, so zlib on the libuv pool counts).
//
// Run directly: node dist/bench/vnc.js  (knobs: VNC_BENCH_WINDOW_S=8 VNC_BENCH_BASELINE_S=5
// VNC_BENCH_IDLE_S=30 VNC_BENCH_IDLE_ROUNDS=3 VNC_BENCH_WORKLOADS=scroll,bar). ~3.5 minutes.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { bootGuest, type Guest, loadTestEnv, resolveGuest } from '../test/harness/qemu.js';
import { type DaemonProcess, spawnDaemon as spawnVgpuDaemon } from './vgpu-common.js';
import { absNow, type ClientEvent, type ClientOptions, MARKER_X, type WindowStats } from './vnc-client.js';
import { measurePipeline, type PipelineResult } from './vnc-pipeline.js';

// ------------------------------------------------------------------------------------------ knobs

const num = (name: string, def: number): number => {
  const v = Number(process.env[name]);
  return Number.isFinite(v) && v > 0 ? v : def;
};

interface Knobs {
  windowS: number;
  baselineS: number;
  warmS: number;
  idleS: number;
  idleRounds: number;
  workloads: Workload[];
}

type Workload = 'scroll' | 'bar';
type ServerKind = 'qemu' | 'ours';

function knobs(): Knobs {
  const w = (process.env.VNC_BENCH_WORKLOADS ?? 'scroll,bar').split(',').filter((x): x is Workload => x === 'scroll' || x === 'bar');
  return {
    windowS: num('VNC_BENCH_WINDOW_S', 8),
    baselineS: num('VNC_BENCH_BASELINE_S', 5),
    warmS: num('VNC_BENCH_WARM_S', 1.5),
    idleS: num('VNC_BENCH_IDLE_S', 30),
    idleRounds: Math.round(num('VNC_BENCH_IDLE_ROUNDS', 3)),
    workloads: w.length ? w : ['scroll', 'bar'],
  };
}

const W = 1280;
const H = 800;
const STRIDE = W * 4;
const LINE_ROWS = 16;
const N_LINES = 24;
const BAR_ROWS = 48; // 8 black + 32 pattern + 8 black
/** Guest time between markers under load, in 1/100 s (uptime resolution). */
const MARK_CS = 20;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------ guest side

/** A deterministic PRNG (mulberry32). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** N_LINES text-line images (16 rows each, XRGB8888): an 8x16 pseudo-font, words in a few colours. */
function textLines(): Buffer {
  const rnd = prng(1234);
  const glyphs: Uint8Array[] = [];
  for (let g = 0; g < 64; g++) {
    const rows = new Uint8Array(16);
    for (let y = 3; y < 14; y++) rows[y] = Math.floor(rnd() * 256) & 0x7e & (rnd() < 0.8 ? 0xff : 0x18);
    glyphs.push(rows);
  }
  const colours = [0xc0c0c0, 0xc0c0c0, 0xc0c0c0, 0x55ff55, 0x5555ff, 0xffff55];
  const out = Buffer.alloc(N_LINES * LINE_ROWS * STRIDE);
  for (let l = 0; l < N_LINES; l++) {
    const len = 10 + Math.floor(rnd() * 140);
    let colour = colours[0] as number;
    for (let c = 0; c < len; c++) {
      if (rnd() < 0.15) {
        colour = colours[Math.floor(rnd() * colours.length)] as number; // a space, then a new word colour
        continue;
      }
      const g = glyphs[Math.floor(rnd() * glyphs.length)] as Uint8Array;
      for (let y = 0; y < 16; y++)
        for (let x = 0; x < 8; x++) if (((g[y] as number) >> (7 - x)) & 1) out.writeUInt32LE(colour, (l * LINE_ROWS + y) * STRIDE + (c * 8 + x) * 4);
    }
  }
  return out;
}

/** The bar block: 8 black rows, 32 rows of coloured stripes and a checker, 8 black rows. */
function barImage(): Buffer {
  const out = Buffer.alloc(BAR_ROWS * STRIDE);
  const colours = [0xe04040, 0xe0a040, 0xe0e040, 0x40e040, 0x40e0e0, 0x4040e0, 0xa040e0, 0xf0f0f0];
  for (let y = 8; y < 40; y++)
    for (let x = 0; x < W; x++) {
      const stripe = colours[Math.floor(x / 40) % colours.length] as number;
      const v = ((x >> 3) ^ (y >> 3)) & 1 ? stripe : 0x202020;
      out.writeUInt32LE(v, y * STRIDE + x * 4);
    }
  return out;
}

const GUEST_SCRIPT = `
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
echo "T: fb0 $(cat /sys/class/graphics/fb0/virtual_size) $(cat /sys/class/graphics/fb0/stride)"
S=${STRIDE}; LB=$((S*${LINE_ROWS})); NL=${N_LINES}; ROWS=${H / LINE_ROWS}; BB=$((S*${BAR_ROWS})); MI=${MARK_CS}
# 6.12's fbdev drops the damage of a write that ends exactly at the end of ONE scanline:
# every write here covers several rows, or part of row 0 only.
clear() { dd if=/dev/zero of=/dev/fb0 bs=$LB seek=1 count=$((ROWS-1)) 2>/dev/null; }
text() { i=1; while [ $i -lt $ROWS ]; do dd if=/lines.raw of=/dev/fb0 bs=$LB skip=$((i % NL)) seek=$i count=1 2>/dev/null; i=$((i+1)); done; }
dd if=/dev/zero of=/dev/fb0 bs=$LB count=$ROWS 2>/dev/null
text
X=0123456789abcdef
# marker: the console line, then 16 pixels at (${MARKER_X - 8}..${MARKER_X + 7}, 0) with B=5a G=code R=a5
mark() { c=$(( $1 % 200 + 32 )); g=\${X:$((c>>4)):1}\${X:$((c&15)):1}; P="\\x5a\\x$g\\xa5\\x00"; P="$P$P$P$P"; echo "MK $1 $2"; printf "$P$P$P$P" > /dev/fb0; }
now() { read u _ < /proc/uptime; t=\${u%.*}\${u#*.}; }
scroll() {
  s=$1; k=0; now; next=$((t+MI))
  while :; do
    dd if=/dev/fb0 of=/dev/fb0 bs=$LB skip=2 seek=1 count=$((ROWS-2)) 2>/dev/null
    dd if=/lines.raw of=/dev/fb0 bs=$LB skip=$((k % NL)) seek=$((ROWS-1)) count=1 2>/dev/null
    k=$((k+1)); now
    if [ $t -ge $next ]; then mark $s $k; s=$((s+1)); next=$((t+MI)); fi
  done
}
bar() {
  s=$1; k=0; y=16; d=8; now; next=$((t+MI))
  while :; do
    dd if=/bar.raw of=/dev/fb0 bs=$BB seek=$((y*S)) oflag=seek_bytes count=1 2>/dev/null
    y=$((y+d)); if [ $y -gt $((${H}-${BAR_ROWS})) ]; then y=$((${H}-${BAR_ROWS})); d=-8; elif [ $y -lt 16 ]; then y=16; d=8; fi
    k=$((k+1)); now
    if [ $t -ge $next ]; then mark $s $k; s=$((s+1)); next=$((t+MI)); fi
  done
}
echo "T: ready"
P=""
while read cmd a; do
  case "$cmd" in
    scroll) text; scroll $a & P=$!; echo "T: started $a";;
    bar) clear; bar $a & P=$!; echo "T: started $a";;
    stop) [ -n "$P" ] && kill $P && wait $P 2>/dev/null; P=""; echo "T: stopped $a";;
    mark) mark $a 0;;
    quit) break;;
  esac
done
`;

const markerCode = (seq: number): number => (seq % 200) + 32;

/** The guest's workloads replayed into plain memory, for the in-process pipeline breakdown. */
async function pipelineBreakdown(lines: Buffer, bar: Buffer): Promise<PipelineResult[]> {
  const LB = LINE_ROWS * STRIDE;
  const text = (vram: Buffer): void => {
    vram.fill(0);
    for (let i = 1; i < H / LINE_ROWS; i++) lines.copy(vram, i * LB, (i % N_LINES) * LB, ((i % N_LINES) + 1) * LB);
  };
  const scroll = (vram: Buffer, k: number): void => {
    vram.copyWithin(LB, 2 * LB, H * STRIDE);
    lines.copy(vram, (H / LINE_ROWS - 1) * LB, (k % N_LINES) * LB, ((k % N_LINES) + 1) * LB);
  };
  let y = 16;
  let d = 8;
  const moveBar = (vram: Buffer): void => {
    bar.copy(vram, y * STRIDE);
    y += d;
    if (y > H - BAR_ROWS) {
      y = H - BAR_ROWS;
      d = -8;
    } else if (y < 16) {
      y = 16;
      d = 8;
    }
  };
  return [
    await measurePipeline('scroll', W, H, text, scroll, false),
    await measurePipeline('scroll', W, H, text, scroll, true),
    await measurePipeline('bar', W, H, (v) => v.fill(0), moveBar, false),
  ];
}

// ----------------------------------------------------------------------------------- processes

/** `mediated daemon` in its own Node process (so /proc/PID covers exactly the daemon), no web viewer. */
function spawnDaemon(dir: string): Promise<DaemonProcess> {
  return spawnVgpuDaemon(join(dir, 'run'), join(dir, 'state'), 20_000, ['--http', 'off']);
}

/** A free TCP port on 127.0.0.1 at or above `min` (QEMU's -vnc takes a display number = port - 5900). */
async function freePort(min: number, max: number): Promise<number> {
  const start = min + Math.floor(Math.random() * (max - min));
  for (let i = 0; i <= max - min; i++) {
    const port = min + ((start - min + i) % (max - min + 1));
    const ok = await new Promise<boolean>((res) => {
      const s = createServer();
      s.once('error', () => res(false));
      s.listen(port, '127.0.0.1', () => s.close(() => res(true)));
    });
    if (ok) return port;
  }
  throw new Error(`no free port in ${min}..${max}`);
}

// ------------------------------------------------------------------------------------------ CPU

function schedNs(pid: number, tid: number): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
  } catch {
    return 0;
  }
}

function tasks(pid: number): { tid: number; comm: string }[] {
  let ids: string[] = [];
  try {
    ids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return ids.map((t) => {
    let comm = '';
    try {
      comm = readFileSync(`/proc/${pid}/task/${t}/comm`, 'utf8').trim();
    } catch {
      // thread gone
    }
    return { tid: Number(t), comm };
  });
}

/** CPU nanoseconds consumed so far by the parts of a server process we charge to VNC. */
interface CpuSample {
  t: number;
  /** QEMU: main thread; ours: the whole daemon process. */
  main: number;
  /** QEMU: vnc_worker thread; ours: 0 (included in main). */
  worker: number;
  /** QEMU: vCPU thread(s), not charged (the guest runs there). */
  vcpu: number;
}

function sampleCpu(kind: ServerKind, pid: number): CpuSample {
  const s: CpuSample = { t: absNow(), main: 0, worker: 0, vcpu: 0 };
  for (const { tid, comm } of tasks(pid)) {
    const ns = schedNs(pid, tid);
    if (kind === 'ours') s.main += ns;
    else if (tid === pid) s.main += ns;
    else if (comm === 'vnc_worker') s.worker += ns;
    else if (comm.includes('/TCG') || comm.startsWith('CPU ')) s.vcpu += ns;
  }
  return s;
}

interface CpuRate {
  /** ms of CPU per second of wall time */
  main: number;
  worker: number;
  vcpu: number;
  total: number;
}

function cpuRate(a: CpuSample, b: CpuSample): CpuRate {
  const s = (b.t - a.t) / 1000;
  const main = (b.main - a.main) / 1e6 / s;
  const worker = (b.worker - a.worker) / 1e6 / s;
  return { main, worker, vcpu: (b.vcpu - a.vcpu) / 1e6 / s, total: main + worker };
}

// --------------------------------------------------------------------------------------- client

/** A measuring client in a worker thread. */
class ClientHandle {
  readonly markers: { code: number; t: number }[] = [];
  readonly ready: Promise<{ width: number; height: number }>;
  private readonly worker: Worker;
  private windowWaiter: ((s: WindowStats) => void) | null = null;
  error: string | null = null;

  constructor(options: ClientOptions) {
    this.worker = new Worker(new URL('./vnc-client.js', import.meta.url), { workerData: { kind: 'vnc-measuring-client', options } });
    let readyRes: (v: { width: number; height: number }) => void = () => {};
    let readyRej: (e: Error) => void = () => {};
    this.ready = new Promise((res, rej) => {
      readyRes = res;
      readyRej = rej;
    });
    this.ready.catch(() => {});
    this.worker.on('message', (e: ClientEvent) => {
      if (e.type === 'ready') readyRes({ width: e.width, height: e.height });
      else if (e.type === 'marker') this.markers.push({ code: e.code, t: e.t });
      else if (e.type === 'window') {
        this.windowWaiter?.(e.stats);
        this.windowWaiter = null;
      } else if (e.type === 'error') {
        this.error = e.message;
        readyRej(new Error(`VNC client: ${e.message}`));
      }
    });
    this.worker.on('error', (e) => {
      this.error = e.stack ?? e.message;
      readyRej(e);
    });
  }

  startWindow(): void {
    this.worker.postMessage({ cmd: 'start-window' });
  }

  endWindow(): Promise<WindowStats> {
    return new Promise((res, rej) => {
      this.windowWaiter = res;
      this.worker.postMessage({ cmd: 'end-window' });
      setTimeout(() => rej(new Error(`VNC client did not report its window${this.error ? `: ${this.error}` : ''}`)), 10_000).unref();
    });
  }

  async close(): Promise<void> {
    this.worker.postMessage({ cmd: 'close' });
    const t = setTimeout(() => void this.worker.terminate(), 2_000);
    await new Promise<void>((r) => this.worker.once('exit', () => r()));
    clearTimeout(t);
  }
}

// -------------------------------------------------------------------------------------- serial

/** Console markers `MK <seq> <steps>` with their arrival times, followed in sequence. */
class MarkerLog {
  readonly seen = new Map<number, { t: number; steps: number }>();

  /** Follows seq, seq+1, … until stop() (each line is timestamped when its console chunk arrives). */
  follow(guest: Guest, from: number): { stop(): void } {
    let stopped = false;
    void (async () => {
      for (let s = from; !stopped; s++) {
        try {
          const m = await guest.waitFor(new RegExp(`^MK ${s} (\\d+)\\n`, 'm'), 600_000);
          this.seen.set(s, { t: absNow(), steps: Number(m[1]) });
        } catch {
          return; // QEMU exited
        }
      }
    })();
    return {
      stop: () => {
        stopped = true;
      },
    };
  }

  /** One marker on request (idle case). */
  async one(guest: Guest, seq: number): Promise<number> {
    const p = guest.waitFor(new RegExp(`^MK ${seq} \\d+\\n`, 'm'), 20_000).then(() => absNow());
    guest.write(`mark ${seq}\n`);
    const t = await p;
    this.seen.set(seq, { t, steps: 0 });
    return t;
  }

  inWindow(t0: number, t1: number): [number, { t: number; steps: number }][] {
    return [...this.seen.entries()].filter(([, v]) => v.t >= t0 && v.t <= t1).sort((a, b) => a[0] - b[0]);
  }

  maxSeq(): number {
    return Math.max(0, ...this.seen.keys());
  }
}

/** Guest steps per second from the markers' step counters. */
function stepRate(ms: [number, { t: number; steps: number }][]): number {
  if (ms.length < 2) return Number.NaN;
  const a = ms[0]?.[1] as { t: number; steps: number };
  const b = ms[ms.length - 1]?.[1] as { t: number; steps: number };
  return ((b.steps - a.steps) * 1000) / (b.t - a.t);
}

/** Latency of each console marker to the first decoded update showing its code. */
function matchLatencies(serial: [number, { t: number }][], client: { code: number; t: number }[]): { lat: number[]; lost: number } {
  const lat: number[] = [];
  let lost = 0;
  for (const [seq, { t }] of serial) {
    const code = markerCode(seq);
    const hit = client.find((m) => m.code === code && m.t >= t - 1000 && m.t <= t + 10_000);
    if (hit) lat.push(hit.t - t);
    else lost++;
  }
  return { lat, lost };
}

// ---------------------------------------------------------------------------------------- VMs

interface Vm {
  kind: ServerKind;
  guest: Guest;
  vncPort: number;
  /** the process whose CPU is charged to the VNC server */
  serverPid: number;
  markers: MarkerLog;
}

async function bootVm(kind: ServerKind, dir: string, daemon: DaemonProcess | null, files: { path: string; data: Buffer }[], booted: Guest[]): Promise<Vm> {
  let vncPort: number;
  let guest: Guest;
  const common = { guest: '6.12', workDir: join(dir, `vm-${kind}`), script: GUEST_SCRIPT, files, timeoutMs: 900_000, waitTimeoutMs: 120_000 };
  if (kind === 'ours') {
    if (!daemon) throw new Error('no daemon');
    vncPort = await freePort(20000, 29999);
    const r = await daemon.client.call<{ uuid: string; socket: string }>('start', {
      parent: 'mediated0',
      type: 'mediated-bochs-medium',
      attrs: [{ vnc: `127.0.0.1:${vncPort}` }],
    });
    guest = await bootGuest({ ...common, devices: [{ socket: r.socket }] });
    booted.push(guest);
  } else {
    vncPort = await freePort(5910, 5999);
    guest = await bootGuest({ ...common, extraDevices: ['bochs-display,id=gpu0,rombar=0'], qemuArgs: ['-vnc', `127.0.0.1:${vncPort - 5900}`] });
    booted.push(guest);
  }
  const m = await guest.waitFor(/T: fb0 (\d+),(\d+) (\d+)\n/);
  if (Number(m[1]) !== W || Number(m[2]) !== H || Number(m[3]) !== STRIDE)
    throw new Error(`${kind}: the guest framebuffer is ${m[1]}x${m[2]} stride ${m[3]}, the benchmark needs ${W}x${H} stride ${STRIDE}`);
  await guest.waitFor(/T: ready/);
  return { kind, guest, vncPort, serverPid: kind === 'ours' ? (daemon as DaemonProcess).pid : guest.pid, markers: new MarkerLog() };
}

// ------------------------------------------------------------------------------------- phases

type Variant = 'request' | 'copyrect' | 'continuous';

interface ViewerRun {
  variant: Variant;
  stats: WindowStats;
  lat: number[];
  lost: number;
  cpu: CpuRate;
  guestStepsPerS: number;
}

interface LoadRun {
  server: ServerKind;
  workload: Workload;
  baseline: CpuRate;
  baselineStepsPerS: number;
  viewers: ViewerRun[];
}

interface IdleRun {
  server: ServerKind;
  lat: number[];
  lost: number;
  /** CPU with one idle viewer connected, over the idle wait */
  cpu: CpuRate | null;
}

let nextSeq = 1000;

async function loadPhase(vm: Vm, workload: Workload, variants: Variant[], k: Knobs, progress: (m: string) => void): Promise<LoadRun> {
  const base = nextSeq;
  const follower = vm.markers.follow(vm.guest, base);
  try {
    vm.guest.write(`${workload} ${base}\n`);
    await vm.guest.waitFor(new RegExp(`T: started ${base}\\n`));
    await sleep(k.warmS * 1000);
    const c0 = sampleCpu(vm.kind, vm.serverPid);
    await sleep(k.baselineS * 1000);
    const c1 = sampleCpu(vm.kind, vm.serverPid);
    const baseline = cpuRate(c0, c1);
    const baselineStepsPerS = stepRate(vm.markers.inWindow(c0.t, c1.t));
    const viewers: ViewerRun[] = [];
    for (const variant of variants) {
      progress(`${vm.kind} ${workload} ${variant}`);
      const client = new ClientHandle({ host: '127.0.0.1', port: vm.vncPort, continuous: variant === 'continuous', copyRect: variant === 'copyrect' });
      try {
        await withTimeout(client.ready, 30_000, `${vm.kind}: the VNC client got no picture`);
        await sleep(1000);
        client.startWindow();
        const v0 = sampleCpu(vm.kind, vm.serverPid);
        await sleep(k.windowS * 1000);
        const v1 = sampleCpu(vm.kind, vm.serverPid);
        const stats = await client.endWindow();
        // Markers whose console line came in the window; those of its end may still be on their way.
        const serial = vm.markers.inWindow(v0.t, v1.t);
        for (let i = 0; i < 30 && matchLatencies(serial, client.markers).lost > 0; i++) await sleep(100);
        const { lat, lost } = matchLatencies(serial, client.markers);
        viewers.push({ variant, stats, lat, lost, cpu: cpuRate(v0, v1), guestStepsPerS: stepRate(vm.markers.inWindow(v0.t, v1.t)) });
      } finally {
        await client.close();
      }
    }
    return { server: vm.kind, workload, baseline, baselineStepsPerS, viewers };
  } finally {
    vm.guest.write(`stop ${base}\n`);
    await vm.guest.waitFor(new RegExp(`T: stopped ${base}\\n`), 30_000).catch(() => {});
    follower.stop();
    await sleep(200);
    nextSeq = Math.max(nextSeq, vm.markers.maxSeq() + 1, base + 1) + 7;
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, rej) => (t = setTimeout(() => rej(new Error(what)), ms)))]).finally(() => clearTimeout(t));
}

// ------------------------------------------------------------------------------------- statistics

function pct(values: number[], p: number): number {
  if (!values.length) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] as number;
}

const f0 = (v: number): string => (Number.isFinite(v) ? v.toFixed(0) : '-');
const f1 = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '-');
const mean = (v: number[]): number => (v.length ? v.reduce((a, b) => a + b, 0) / v.length : Number.NaN);
const pad = (s: string, n: number): string => (s.length >= n ? s : s + ' '.repeat(n - s.length));
const lpad = (s: string, n: number): string => (s.length >= n ? s : ' '.repeat(n - s.length) + s);

const ENC_NAMES: Record<string, string> = { '0': 'Raw', '1': 'CopyRect', '5': 'Hextile', '7': 'Tight', '16': 'ZRLE' };
const VARIANT_NAMES: Record<Variant, string> = { request: 'ours (FBUR)', copyrect: 'ours (FBUR + CopyRect)', continuous: 'ours (ContinuousUpdates)' };

// ------------------------------------------------------------------------------------------ run

export interface VncBenchResult {
  qemuVersion: string;
  kernel: string;
  loads: LoadRun[];
  idle: IdleRun[];
  pipeline: PipelineResult[];
  machine: string;
  durationS: number;
}

export async function runVncBenchmark(progress: (m: string) => void = () => {}): Promise<VncBenchResult> {
  const k = knobs();
  const started = Date.now();
  const env = loadTestEnv();
  const g = resolveGuest(env, '6.12');
  const dir = mkdtempSync(join(tmpdir(), 'mediated-vncbench-'));
  const files = [
    { path: '/lines.raw', data: textLines() },
    { path: '/bar.raw', data: barImage() },
  ];
  let daemon: DaemonProcess | null = null;
  const guests: Guest[] = [];
  const clients: ClientHandle[] = [];
  // Interrupted: exit, and the exit hooks (ours and the QEMU harness') SIGKILL the daemon and the QEMUs.
  const onSignal = (sig: NodeJS.Signals): void => {
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`vnc benchmark: ${sig}, killing the VMs and the daemon\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    // First, while nothing else runs in this process: our pipeline's cost per update, in-process.
    progress('pipeline breakdown (in-process replay)');
    const pipeline = await pipelineBreakdown(files[0]?.data as Buffer, files[1]?.data as Buffer);
    progress('booting both VMs');
    daemon = await spawnDaemon(dir);
    const boots = await Promise.allSettled([bootVm('ours', dir, daemon, files, guests), bootVm('qemu', dir, null, files, guests)]);
    for (const b of boots) if (b.status === 'rejected') throw b.reason;
    const [ours, qemu] = boots.map((b) => (b as PromiseFulfilledResult<Vm>).value) as [Vm, Vm];
    const loads: LoadRun[] = [];
    const idleSince = new Map<ServerKind, number>();
    const idleClients = new Map<ServerKind, ClientHandle>();
    const idleCpu0 = new Map<ServerKind, CpuSample>();
    // Ours first: its idle viewer then waits while QEMU's loads run (an idle viewer of ours costs
    // a 60 Hz compare of an unchanged frame in the daemon process, nothing in QEMU's).
    for (const vm of [ours, qemu]) {
      for (const w of k.workloads) {
        // QEMU never sends CopyRect; our scroll detection only fires when >= 25 % of the rows change (not for the bar).
        const variants: Variant[] = vm.kind === 'qemu' ? ['request'] : w === 'scroll' ? ['request', 'copyrect', 'continuous'] : ['request', 'continuous'];
        loads.push(await loadPhase(vm, w, variants, k, progress));
      }
      const c = new ClientHandle({ host: '127.0.0.1', port: vm.vncPort, continuous: false });
      clients.push(c);
      await withTimeout(c.ready, 30_000, `${vm.kind}: the idle VNC client got no picture`);
      await sleep(500);
      idleClients.set(vm.kind, c);
      idleSince.set(vm.kind, absNow());
      idleCpu0.set(vm.kind, sampleCpu(vm.kind, vm.serverPid));
    }
    progress(`idle latency: ${k.idleRounds} rounds of ${k.idleS} s`);
    const idleLat = new Map<ServerKind, { lat: number[]; lost: number; cpu: CpuRate | null }>([
      ['ours', { lat: [], lost: 0, cpu: null }],
      ['qemu', { lat: [], lost: 0, cpu: null }],
    ]);
    for (let round = 0; round < k.idleRounds; round++) {
      const order = [ours, qemu].sort((a, b) => (idleSince.get(a.kind) as number) - (idleSince.get(b.kind) as number));
      for (const vm of order) {
        const wait = (idleSince.get(vm.kind) as number) + k.idleS * 1000 - absNow();
        if (wait > 0) await sleep(wait);
        const r = idleLat.get(vm.kind) as { lat: number[]; lost: number; cpu: CpuRate | null };
        if (round === 0) r.cpu = cpuRate(idleCpu0.get(vm.kind) as CpuSample, sampleCpu(vm.kind, vm.serverPid));
        const c = idleClients.get(vm.kind) as ClientHandle;
        const seq = nextSeq++;
        const ts = await vm.markers.one(vm.guest, seq);
        const code = markerCode(seq);
        const deadline = absNow() + 8000;
        let hit: { code: number; t: number } | undefined;
        while (!(hit = c.markers.find((m) => m.code === code && m.t >= ts - 1000)) && absNow() < deadline) await sleep(5);
        if (hit) r.lat.push(hit.t - ts);
        else r.lost++;
        progress(`idle ${vm.kind} round ${round + 1}: ${hit ? `${(hit.t - ts).toFixed(1)} ms` : 'not seen in 8 s'}`);
        idleSince.set(vm.kind, Math.max(absNow(), hit?.t ?? 0));
      }
    }
    const idle: IdleRun[] = [...idleLat.entries()].map(([server, v]) => ({ server, ...v }));
    const c = cpus();
    return {
      qemuVersion: env.qemuVersion,
      kernel: g.kernelVersion,
      loads,
      idle,
      pipeline,
      machine: `${c.length} x ${c[0]?.model ?? '?'}, Node ${process.version}, load ${loadavg()
        .map((x) => x.toFixed(1))
        .join(' ')}`,
      durationS: (Date.now() - started) / 1000,
    };
  } catch (e) {
    const err = e as Error;
    const tail = daemon?.stderr().slice(-3000);
    if (tail) err.message += `\n--- daemon log tail ---\n${tail}`;
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (process.env.VNC_BENCH_DEBUG) for (const g of guests) process.stderr.write(`--- console of ${g.pid} ---\n${g.output().slice(-3000)}\n`);
    for (const c of clients) await c.close().catch(() => {});
    for (const g of guests) g.kill();
    await Promise.all(guests.map((g) => g.exited));
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------- report

const WORKLOAD_TITLES: Record<Workload, string> = {
  scroll: 'scrolling text (rows 16-799 move up 16 rows per step, new line at the bottom)',
  bar: 'moving pattern (1280x32 striped bar bouncing 8 rows per step)',
};

export function formatVncReport(r: VncBenchResult): string {
  const out: string[] = [];
  out.push(
    `VNC server: ours (mediated vGPU over vfio-user, daemon process) vs QEMU ${r.qemuVersion}'s built-in VNC (-device bochs-display), same guest ${r.kernel} under TCG, ${W}x${H} XRGB8888.`,
  );
  out.push(
    'Client: noVNC-like (shared, RGBX 32/24 shifts 0/8/16, encodings Tight ZRLE Hextile Raw + compress 2 + DesktopSize + ExtDesktopSize; one incremental FBUR outstanding; "+ CopyRect" = CopyRect first, as noVNC really asks), every rect decoded with test/rfb/decoders.ts (synchronous inflate, like noVNC) in a worker thread.',
  );
  out.push(`Machine: ${r.machine}. Run took ${r.durationS.toFixed(0)} s.`);
  out.push(
    'CPU = server CPU ms per second of wall time with the viewer, minus the same workload with no viewer (QEMU: main thread + vnc_worker; ours: the whole daemon process).',
  );
  out.push(
    'guest st/s = workload steps per second the guest made with / without the viewer; req→upd = FBUR sent → update header received (mean); lat = guest marker (console line) → decoded pixel.',
  );
  const targets: { what: string; detail: string; ok: boolean }[] = [];
  const header = `  ${pad('server', 26)}${lpad('guest st/s', 11)}${lpad('upd/s', 8)}${lpad('B/upd', 9)}${lpad('KB/s', 8)}${lpad('req→upd', 9)}${lpad('lat p50', 9)}${lpad('p99', 7)}${lpad('n/lost', 8)}${lpad('CPU ms/s', 10)}  ${'(with viewer - baseline; detail)'}`;
  for (const w of new Set(r.loads.map((l) => l.workload))) {
    out.push('');
    out.push(`Workload: ${WORKLOAD_TITLES[w]}`);
    out.push(header);
    const rows: { name: string; v: ViewerRun; l: LoadRun }[] = [];
    for (const l of r.loads.filter((x) => x.workload === w))
      for (const v of l.viewers) rows.push({ name: l.server === 'qemu' ? 'QEMU VNC (FBUR)' : VARIANT_NAMES[v.variant], v, l });
    for (const { name, v, l } of rows) {
      const s = v.stats;
      const secs = s.ms / 1000;
      const ups = s.updates / secs;
      const bpu = s.bytes / Math.max(1, s.updates);
      const cpu = v.cpu.total - l.baseline.total;
      const encs = Object.entries(s.encodings)
        .map(([e, n]) => `${ENC_NAMES[e] ?? e}:${n}`)
        .join(' ');
      const t = s.tight;
      const tight = s.encodings['7'] ? ` (fill ${t.fill}, full-colour ${t.copy}, mono ${t.mono}, indexed ${t.indexed}, tiny ${t.uncompressed})` : '';
      const detail =
        l.server === 'qemu'
          ? `${f1(v.cpu.main)}+${f1(v.cpu.worker)} - ${f1(l.baseline.main)}+${f1(l.baseline.worker)} (main+vnc_worker); vCPU ${f0(v.cpu.vcpu)}`
          : `${f1(v.cpu.total)} - ${f1(l.baseline.total)}`;
      out.push(
        `  ${pad(name, 26)}${lpad(`${f1(v.guestStepsPerS)}/${f1(l.baselineStepsPerS)}`, 11)}${lpad(f1(ups), 8)}${lpad(f0(bpu), 9)}${lpad(f0(s.bytes / 1024 / secs), 8)}${lpad(s.requestToUpdateMs.length ? f1(mean(s.requestToUpdateMs)) : '-', 9)}${lpad(f1(pct(v.lat, 0.5)), 9)}${lpad(f1(pct(v.lat, 0.99)), 7)}${lpad(`${v.lat.length}/${v.lost}`, 8)}${lpad(f1(cpu), 10)}  ${detail}; rects ${encs}${tight}; client decode ${f0(s.decodeMs / secs)} ms/s`,
      );
    }
    const q = rows.find((x) => x.l.server === 'qemu')?.v;
    if (!q) continue;
    const qUps = q.stats.updates / (q.stats.ms / 1000);
    const qBpu = q.stats.bytes / Math.max(1, q.stats.updates);
    const qBps = q.stats.bytes / (q.stats.ms / 1000);
    const qCpu = (rows.find((x) => x.l.server === 'qemu')?.v.cpu.total ?? 0) - (rows.find((x) => x.l.server === 'qemu')?.l.baseline.total ?? 0);
    for (const { name, v, l } of rows.filter((x) => x.l.server === 'ours')) {
      const ups = v.stats.updates / (v.stats.ms / 1000);
      const bpu = v.stats.bytes / Math.max(1, v.stats.updates);
      const bps = v.stats.bytes / (v.stats.ms / 1000);
      const cpu = v.cpu.total - l.baseline.total;
      out.push(
        `  ratio ${pad(name, 25)} upd/s ${f1(ups / qUps)}x, B/upd ${(bpu / qBpu).toFixed(2)}x, B/s ${(bps / qBps).toFixed(2)}x, CPU/viewer ${(cpu / qCpu).toFixed(2)}x (${f1(cpu)} vs ${f1(qCpu)} ms/s; ${f1(cpu / ups)} vs ${f1(qCpu / qUps)} ms per update)`,
      );
      targets.push({ what: `${w} ${name}: upd/s >= 2x QEMU`, detail: `${f1(ups)} vs ${f1(qUps)} = ${(ups / qUps).toFixed(2)}x`, ok: ups >= 2 * qUps });
      targets.push({ what: `${w} ${name}: bytes/update <= QEMU`, detail: `${f0(bpu)} vs ${f0(qBpu)} B`, ok: bpu <= qBpu });
      targets.push({ what: `${w} ${name}: bytes/s <= QEMU`, detail: `${f0(bps / 1024)} vs ${f0(qBps / 1024)} KB/s`, ok: bps <= qBps });
      targets.push({
        what: `${w} ${name}: latency p99 <= 40 ms under load`,
        detail: `p50 ${f1(pct(v.lat, 0.5))}, p99 ${f1(pct(v.lat, 0.99))} ms, n=${v.lat.length}, lost ${v.lost}`,
        ok: pct(v.lat, 0.99) <= 40 && v.lost === 0,
      });
    }
    targets.push({
      what: `${w} QEMU VNC (FBUR): latency p99 <= 40 ms under load`,
      detail: `p50 ${f1(pct(q.lat, 0.5))}, p99 ${f1(pct(q.lat, 0.99))} ms, n=${q.lat.length}, lost ${q.lost}`,
      ok: pct(q.lat, 0.99) <= 40 && q.lost === 0,
    });
  }
  out.push('');
  out.push('Idle: one marker after >= 30 s without any change, viewer connected (request mode):');
  for (const i of r.idle) {
    const name = i.server === 'qemu' ? 'QEMU VNC' : 'ours';
    const cpu = i.cpu ? (i.server === 'qemu' ? `${f1(i.cpu.main)}+${f1(i.cpu.worker)} ms/s (main+vnc_worker)` : `${f1(i.cpu.total)} ms/s (daemon)`) : '-';
    out.push(`  ${pad(name, 10)} latencies ${i.lat.map((x) => f1(x)).join(', ') || '-'} ms; lost ${i.lost}; server CPU while idle with 1 viewer ${cpu}`);
    targets.push({
      what: `idle ${name}: latency p99 <= 40 ms`,
      detail: `p50 ${f1(pct(i.lat, 0.5))}, max ${f1(pct(i.lat, 1))} ms, n=${i.lat.length}, lost ${i.lost}`,
      ok: pct(i.lat, 0.99) <= 40 && i.lost === 0 && i.lat.length > 0,
    });
  }
  out.push('');
  out.push(
    'Our pipeline per update, replayed in-process on the same content (medians; refresh = shadow compare + copy + convert, encode = Tight in JS, zlib = level-2 streams on the libuv pool):',
  );
  for (const p of r.pipeline)
    out.push(
      `  ${pad(p.workload + (p.copyRect ? ' +CopyRect' : ''), 17)} refresh ${p.median.refreshMs.toFixed(2)} ms, encode ${p.median.encodeMs.toFixed(2)} ms, zlib ${p.median.zlibMs.toFixed(2)} ms wall / ${p.median.zlibCpuMs.toFixed(2)} ms CPU; ${f0(p.median.rects)} rects, ${f0(p.median.bytes)} B per update (${p.steps} steps)`,
    );
  out.push('');
  out.push('Targets:');
  for (const t of targets) out.push(`  ${t.ok ? 'PASS' : 'MISS'}  ${pad(t.what, 62)} ${t.detail}`);
  return out.join('\n');
}

/** For bench/run.ts: runs the benchmark and returns the report text. */
export async function runVncBenchmarks(): Promise<string> {
  return formatVncReport(await runVncBenchmark());
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const t0 = Date.now();
  runVncBenchmark((m) => process.stderr.write(`[vnc-bench +${((Date.now() - t0) / 1000).toFixed(0)}s] ${m}\n`))
    .then((r) => {
      process.stdout.write(`${formatVncReport(r)}\n`);
      if (process.env.VNC_BENCH_JSON) process.stdout.write(`${JSON.stringify(r)}\n`);
    })
    .catch((e: Error) => {
      process.stderr.write(`${e.stack ?? e.message}\n`);
      process.exitCode = 1;
    });
}
