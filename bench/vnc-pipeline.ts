// Where our VNC server's time goes per update, measured in this process on the same content
// as the live benchmark (bench/vnc.ts): the guest's workload step is replayed into a plain memory
// "VRAM", then one viewer update is produced exactly as RfbDisplay/RfbSession do it:
//   refresh  ShadowFramebuffer.refresh(): row memcmp against the shadow, per-64-pixel tile
//            compares in changed rows, copy + XRGB -> 0x00RRGGBB conversion of dirty tiles;
//   encode   the session's damage rects, encoded with our Tight encoder for noVNC's RGBX format
//            (the synchronous JS part, shared between viewers);
//   zlib     finishRect on the viewer's persistent level-2 streams (libuv pool; wall time, and
//            the process CPU time it used).
// Medians over a number of steps; no guest, no sockets.
import { type DisplaySource, DrmFormat, emptyPlane, type PlaneInfo, PlaneType } from '../src/display/plane.js';
import { encodeTight } from '../src/display/rfb/encoders/index.js';
import { ShadowFramebuffer, TILE } from '../src/display/rfb/framebuffer.js';
import type { EncodedRect, Rect } from '../src/display/rfb/types.js';
import { finishRect, ZlibStreams } from '../src/display/rfb/zlib-streams.js';
import { RGBX } from './vnc-client.js';

export interface PipelineStep {
  refreshMs: number;
  encodeMs: number;
  zlibMs: number;
  zlibCpuMs: number;
  rects: number;
  bytes: number;
}

export interface PipelineResult {
  workload: string;
  copyRect: boolean;
  steps: number;
  median: PipelineStep;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s.length ? (s[(s.length - 1) >> 1] as number) : Number.NaN;
}

/** A memory-only display source showing one XRGB8888 plane. */
function memorySource(width: number, height: number): { source: DisplaySource; vram: Buffer } {
  const vram = Buffer.alloc(width * height * 4);
  const plane: PlaneInfo = {
    ...emptyPlane(PlaneType.PRIMARY),
    drm_format: DrmFormat.XRGB8888,
    width,
    height,
    stride: width * 4,
    size: width * height * 4,
    dmabuf_id: 1,
  };
  const source: DisplaySource = { queryPlane: () => plane, framebuffer: { fd: -1, bytes: vram }, onPlaneChange: () => () => {} };
  return { source, vram };
}

/** Dirty tiles merged like RfbSession.takeDirty (horizontal runs, then identical runs below). */
function sessionRects(damage: Rect[], width: number, height: number): Rect[] {
  const tx = Math.ceil(width / TILE);
  const ty = Math.ceil(height / TILE);
  const dirty = new Uint8Array(tx * ty);
  for (const r of damage)
    for (let y = Math.floor(r.y / TILE); y < Math.ceil((r.y + r.h) / TILE); y++)
      dirty.fill(1, y * tx + Math.floor(r.x / TILE), y * tx + Math.ceil((r.x + r.w) / TILE));
  const rects: Rect[] = [];
  const open = new Map<string, Rect>();
  for (let y = 0; y < ty; y++) {
    const seen = new Set<string>();
    let x = 0;
    while (x < tx) {
      if (!dirty[y * tx + x]) {
        x++;
        continue;
      }
      let end = x;
      while (end + 1 < tx && dirty[y * tx + end + 1]) end++;
      const key = `${x}:${end}`;
      const h = Math.min(TILE, height - y * TILE);
      const prev = open.get(key);
      if (prev && prev.y + prev.h === y * TILE) prev.h += h;
      else {
        const r = { x: x * TILE, y: y * TILE, w: Math.min(width, (end + 1) * TILE) - x * TILE, h };
        rects.push(r);
        open.set(key, r);
      }
      seen.add(key);
      x = end + 1;
    }
    for (const k of [...open.keys()]) if (!seen.has(k)) open.delete(k);
  }
  return rects;
}

/**
 * Replays `steps` workload steps (`step(vram, i)` changes the VRAM like the guest does) and
 * measures one update after each.
 */
export async function measurePipeline(
  workload: string,
  width: number,
  height: number,
  init: (vram: Buffer) => void,
  step: (vram: Buffer, i: number) => void,
  copyRect: boolean,
  steps = 40,
): Promise<PipelineResult> {
  const { source, vram } = memorySource(width, height);
  init(vram);
  const fb = new ShadowFramebuffer(source);
  fb.refresh();
  const streams = new ZlibStreams(2);
  const rows: PipelineStep[] = [];
  try {
    for (let i = 0; i < steps + 5; i++) {
      step(vram, i);
      const t0 = performance.now();
      const r = fb.refresh();
      const t1 = performance.now();
      const encoded: EncodedRect[] = [];
      // A detected scroll: a CopyRect for a viewer that takes them, else the moved band is damage.
      const copied = r.copy && copyRect ? 1 : 0;
      const damage = r.copy && !copyRect ? [...r.damage, { x: 0, y: r.copy.dstY, w: r.copy.width, h: r.copy.h }] : r.damage;
      for (const rect of sessionRects(damage, width, height)) for (const e of encodeTight(fb.frame, rect, RGBX, { compressLevel: 2 })) encoded.push(e);
      const t2 = performance.now();
      const c0 = process.cpuUsage();
      let bytes = 0;
      for (const e of encoded) for (const p of await finishRect(e, streams, 2)) bytes += p.length + 0;
      const c1 = process.cpuUsage(c0);
      const t3 = performance.now();
      if (i >= 5)
        rows.push({
          refreshMs: t1 - t0,
          encodeMs: t2 - t1,
          zlibMs: t3 - t2,
          zlibCpuMs: (c1.user + c1.system) / 1000,
          rects: encoded.length + copied,
          bytes: bytes + 12 * encoded.length + 16 * copied + 4,
        });
    }
  } finally {
    streams.close();
  }
  const m = (k: keyof PipelineStep): number => median(rows.map((x) => x[k]));
  return {
    workload,
    copyRect,
    steps: rows.length,
    median: { refreshMs: m('refreshMs'), encodeMs: m('encodeMs'), zlibMs: m('zlibMs'), zlibCpuMs: m('zlibCpuMs'), rects: m('rects'), bytes: m('bytes') },
  };
}
