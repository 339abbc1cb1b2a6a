// Frame snapshot throughput, 1920x1080 XRGB8888: copying the current plane out of a large-type
// vGPU's exported VRAM with src/display/convert.ts `snapshot`, against a plain memory copy of the
// same size (Uint8Array.set of an ordinary heap buffer into another) in the same run.
//
// No guest: the mode is programmed through the device's registers (BochsVgpu.regionWrite on the
// BAR2 DISPI registers) of an in-process daemon, and the picture is written into VRAM directly.
// The consumer side is what a host program does: 'buffer-export' over the management socket,
// mmap of the fd it receives (consumer.ts mapCurrentBuffer), then snapshots of that mapping.
//
// Variants (every round runs each, in an order rotated per round, after a warm-up):
//   baseline   Uint8Array.set, heap buffer -> preallocated buffer            [the floor]
//   snapshot   snapshot(plane, exported mapping, preallocated out)           [headline]
//   Buffer.copy, heap -> heap                                                (reference)
//   snapshot of the daemon's own VRAM mapping (vgpu.vram.bytes)               (reference)
//   snapshot allocating its output (no `out`)                                (reference)
//   export + mmap + snapshot + munmap + release for every frame              (reference)
// and the baseline/snapshot pair again with cold caches: before each timed frame a 64 MiB scratch
// buffer (twice these VMs' 32 MiB L3) is written, so source and destination come from DRAM, as a
// frame the guest drew a while ago would. Back to back, 2 x 8 MB stay in L3.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type MappedBuffer, mapCurrentBuffer } from '../src/daemon/consumer.js';
import { ControlClient } from '../src/daemon/control-client.js';
import type { BochsVgpu } from '../src/devices/vgpu/bochs-vgpu.js';
import { snapshot } from '../src/display/convert.js';
import { DrmFormat, type PlaneInfo, PlaneType } from '../src/display/plane.js';
import { xrgbPattern } from '../test/harness/patterns.js';
import { dispiAccess, inProcessDaemon, type Machine, machine, modeSetWrites, nowMs, type Summary, summarize, verdict, withTimeout } from './vgpu-common.js';

export interface SnapshotOptions {
  rounds: number;
  /** Timed frames per variant per round (the per-frame export variant takes a quarter). */
  frames: number;
  /** Timed frames per cold-cache variant per round. */
  coldFrames: number;
  /** Untimed frames per variant before the first round. */
  warmup: number;
  /** Limit for the whole benchmark. */
  timeoutMs: number;
  progress: (message: string) => void;
}

export const SNAPSHOT_TARGET_RATIO = 0.5;

export function defaultSnapshotOptions(): SnapshotOptions {
  return { rounds: 7, frames: 40, coldFrames: 16, warmup: 10, timeoutMs: 90_000, progress: () => {} };
}

type VariantId = 'baseline' | 'snapshot' | 'baseline-cold' | 'snapshot-cold' | 'buffer-copy' | 'daemon-view' | 'alloc' | 'export-per-frame';

const LABEL: Record<VariantId, string> = {
  baseline: 'baseline: Uint8Array.set (heap->heap)',
  snapshot: 'ours: snapshot of exported mapping',
  'baseline-cold': 'baseline, cold caches',
  'snapshot-cold': 'ours: snapshot, cold caches',
  'buffer-copy': 'Buffer.copy (heap->heap)',
  'daemon-view': "snapshot of daemon's VRAM view",
  alloc: 'snapshot, allocating output',
  'export-per-frame': 'export+mmap+snapshot+release /frame',
};

export interface VariantResult {
  id: VariantId;
  label: string;
  /** Per-frame time, ns. */
  frame: Summary;
  /** Bytes per second from the median frame time, in GB/s (1e9 bytes). */
  gbps: number;
  /** Frames per second from the median frame time. */
  fps: number;
  /** Per round median GB/s. */
  roundGbps: number[];
}

export interface SnapshotReport {
  options: Omit<SnapshotOptions, 'progress'>;
  machine: Machine;
  loadAfter: number[];
  plane: PlaneInfo;
  frameBytes: number;
  variants: VariantResult[];
  /** snapshot GB/s / baseline GB/s (median frame times). */
  ratio: number;
  roundRatios: number[];
  /** The same with cold caches. */
  coldRatio: number;
  pass: boolean;
  seconds: number;
}

const W = 1920;
const H = 1080;

export async function runSnapshotBenchmark(options: Partial<SnapshotOptions> = {}): Promise<SnapshotReport> {
  const o = { ...defaultSnapshotOptions(), ...options };
  if (!(o.rounds >= 1 && o.frames >= 1)) throw new RangeError('rounds and frames must be >= 1');
  const started = nowMs();
  const mach = machine();
  const dir = mkdtempSync(join(tmpdir(), 'mediated-bench-snap-'));
  const daemon = inProcessDaemon(join(dir, 'run'), join(dir, 'state'));
  // (assigned inside the timed closure: declared this way so the finally block sees their type)
  let client = null as ControlClient | null;
  let mapped = null as MappedBuffer | null;
  try {
    // On a timeout the cleanup below (closing the client, stopping the daemon) ends the work.
    return await withTimeout('the snapshot benchmark', o.timeoutMs, async () => {
      await daemon.start();
      client = new ControlClient(daemon.controlPath);
      const c = client;
      const { uuid } = await c.call<{ uuid: string }>('start', { parent: 'mediated0', type: 'mediated-bochs-large' });
      const vgpu = daemon.core.instance(uuid)?.device?.backend as BochsVgpu;
      for (const [i, v] of modeSetWrites(W, H, 32)) {
        const a = dispiAccess(i, v);
        vgpu.regionWrite(2, a.offset, a.data);
      }
      const plane = vgpu.queryPlane(PlaneType.PRIMARY);
      if (plane.drm_format !== DrmFormat.XRGB8888 || plane.width !== W || plane.height !== H || plane.stride !== W * 4 || plane.offset !== 0) {
        throw new Error(
          `the programmed plane decodes as ${plane.width}x${plane.height} format 0x${plane.drm_format.toString(16)} stride ${plane.stride} offset ${plane.offset}`,
        );
      }
      const size = plane.size;
      // The "guest" draws: the picture goes into VRAM; the baseline copies the same bytes.
      const picture = xrgbPattern(W, H, 7).raw;
      vgpu.vram.bytes.set(picture, plane.offset);
      const heapSrc = Buffer.allocUnsafeSlow(size);
      picture.copy(heapSrc);

      mapped = await mapCurrentBuffer(c, uuid);
      const m = mapped;
      if (m.descriptor.size !== size || m.descriptor.width !== W || m.descriptor.height !== H) {
        throw new Error(`the export describes ${m.descriptor.width}x${m.descriptor.height} (${m.descriptor.size} bytes)`);
      }
      const outs: Record<VariantId, Uint8Array> = {
        baseline: Buffer.allocUnsafeSlow(size),
        snapshot: new Uint8Array(size),
        'baseline-cold': Buffer.allocUnsafeSlow(size),
        'snapshot-cold': new Uint8Array(size),
        'buffer-copy': Buffer.allocUnsafeSlow(size),
        'daemon-view': new Uint8Array(size),
        alloc: new Uint8Array(0),
        'export-per-frame': new Uint8Array(size),
      };
      // Correctness before speed: the snapshot of the exported mapping is the picture.
      const check = snapshot(m.plane, m.bytes, outs.snapshot);
      if (!Buffer.from(check.buffer, check.byteOffset, size).equals(picture)) throw new Error('the snapshot of the exported VRAM differs from what was drawn');

      let sink = 0; // keeps the allocating variant's result observable
      const frame: Record<VariantId, () => Promise<void> | void> = {
        baseline: () => void outs.baseline.set(heapSrc),
        snapshot: () => void snapshot(m.plane, m.bytes, outs.snapshot),
        'baseline-cold': () => void outs['baseline-cold'].set(heapSrc),
        'snapshot-cold': () => void snapshot(m.plane, m.bytes, outs['snapshot-cold']),
        'buffer-copy': () => void heapSrc.copy(outs['buffer-copy'] as Buffer),
        'daemon-view': () => void snapshot(plane, vgpu.vram.bytes, outs['daemon-view']),
        alloc: () => {
          sink ^= snapshot(m.plane, m.bytes)[12345] as number;
        },
        'export-per-frame': async () => {
          const e = await mapCurrentBuffer(c, uuid);
          try {
            snapshot(e.plane, e.bytes, outs['export-per-frame']);
          } finally {
            await e.close();
          }
        },
      };
      const ids = Object.keys(frame) as VariantId[];
      const cold = (id: VariantId): boolean => id.endsWith('-cold');
      const framesOf = (id: VariantId): number => (cold(id) ? o.coldFrames : id === 'export-per-frame' ? Math.max(1, Math.ceil(o.frames / 4)) : o.frames);
      const scratch = Buffer.allocUnsafeSlow(64 << 20);
      let fillByte = 0;
      const evict = (): void => void scratch.fill((fillByte = (fillByte + 1) & 0xff));
      for (const id of ids) for (let i = 0; i < o.warmup; i++) await frame[id]();

      const samples = Object.fromEntries(ids.map((id) => [id, [] as number[]])) as Record<VariantId, number[]>;
      const roundMedian = Object.fromEntries(ids.map((id) => [id, [] as number[]])) as Record<VariantId, number[]>;
      for (let r = 0; r < o.rounds; r++) {
        const order = ids.map((_, i) => ids[(i + r) % ids.length] as VariantId);
        for (const id of order) {
          const f = frame[id];
          const n = framesOf(id);
          const xs: number[] = [];
          for (let i = 0; i < n; i++) {
            if (cold(id)) evict();
            const t = process.hrtime.bigint();
            await f();
            xs.push(Number(process.hrtime.bigint() - t));
          }
          samples[id].push(...xs);
          roundMedian[id].push(summarize(xs).median);
        }
        o.progress(`snapshot: round ${r + 1}/${o.rounds}`);
      }
      if (sink === -1) o.progress('unreachable');
      const variants: VariantResult[] = ids.map((id) => {
        const s = summarize(samples[id]);
        return { id, label: LABEL[id], frame: s, gbps: size / s.median, fps: 1e9 / s.median, roundGbps: roundMedian[id].map((ns) => size / ns) };
      });
      const base = variants.find((v) => v.id === 'baseline') as VariantResult;
      const ours = variants.find((v) => v.id === 'snapshot') as VariantResult;
      const ratio = ours.gbps / base.gbps;
      const coldRatio =
        (variants.find((v) => v.id === 'snapshot-cold') as VariantResult).gbps / (variants.find((v) => v.id === 'baseline-cold') as VariantResult).gbps;
      const { progress: _, ...opts } = o;
      return {
        options: opts,
        machine: mach,
        loadAfter: machine().load,
        plane,
        frameBytes: size,
        variants,
        ratio,
        roundRatios: ours.roundGbps.map((g, i) => g / (base.roundGbps[i] as number)),
        coldRatio,
        pass: ratio >= SNAPSHOT_TARGET_RATIO && coldRatio >= SNAPSHOT_TARGET_RATIO,
        seconds: (nowMs() - started) / 1000,
      };
    });
  } finally {
    await mapped?.close().catch(() => {});
    client?.close();
    await daemon.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

export function formatSnapshotReport(r: SnapshotReport): string {
  const o = r.options;
  const L: string[] = [];
  L.push(
    `Frame snapshot throughput: ${r.plane.width}x${r.plane.height} XRGB8888 (${r.frameBytes} bytes/frame) from a mediated-bochs-large vGPU's exported VRAM vs a plain copy`,
  );
  L.push(
    `${o.rounds} rounds x ${o.frames} frames per variant (cold: ${o.coldFrames}, export-per-frame: ${Math.max(1, Math.ceil(o.frames / 4))}), order rotated per round, +${o.warmup} warm-up; ` +
      `load ${r.machine.load.map((x) => x.toFixed(2)).join(' ')} before, ${r.loadAfter.map((x) => x.toFixed(2)).join(' ')} after; ${r.seconds.toFixed(1)} s`,
  );
  L.push('');
  L.push(
    `  ${''.padEnd(40)}${'GB/s'.padStart(7)}${'frames/s'.padStart(10)}${'ms/frame med'.padStart(14)}${'p90'.padStart(7)}${'max'.padStart(7)}${'vs baseline'.padStart(13)}`,
  );
  const base = r.variants.find((v) => v.id === 'baseline') as VariantResult;
  const baseCold = r.variants.find((v) => v.id === 'baseline-cold') as VariantResult;
  for (const v of r.variants) {
    const against = v.id.endsWith('-cold') ? baseCold : base;
    L.push(
      `  ${v.label.padEnd(40)}${v.gbps.toFixed(2).padStart(7)}${v.fps.toFixed(0).padStart(10)}${(v.frame.median / 1e6).toFixed(3).padStart(14)}` +
        `${(v.frame.p90 / 1e6).toFixed(2).padStart(7)}${(v.frame.max / 1e6).toFixed(2).padStart(7)}${`${(v.gbps / against.gbps).toFixed(2)}x`.padStart(13)}`,
    );
  }
  L.push(`  per round snapshot/baseline: ${r.roundRatios.map((x) => `${x.toFixed(2)}x`).join(' ')}  (cold variants are compared with the cold baseline)`);
  L.push('');
  const ours = r.variants.find((v) => v.id === 'snapshot') as VariantResult;
  L.push(
    `${verdict(r.pass)}: snapshot ${ours.gbps.toFixed(2)} GB/s (${ours.fps.toFixed(0)} frames/s) vs plain copy ${base.gbps.toFixed(2)} GB/s (${base.fps.toFixed(0)} frames/s) = ${r.ratio.toFixed(2)}x; ` +
      `cold caches ${r.coldRatio.toFixed(2)}x (target >= ${SNAPSHOT_TARGET_RATIO}x for both)`,
  );
  return L.join('\n');
}
