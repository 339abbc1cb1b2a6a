// Encoder timings on 1280×800 frames (not a test; run `node dist/test/rfb/timing.js`).
// For each encoder: the synchronous encode (shared by viewers with the same
// pixel format) and the per-client zlib step (finishRect, a fresh client each
// run so it is the first-frame cost): the fastest of N runs in wall time and the
// process CPU time of that run (zlib runs on the libuv pool), robust to a loaded host.
import { performance } from 'node:perf_hooks';
import { encodeHextile, encodeRaw, encodeTight, encodeZlib, encodeZrle } from '../../src/display/rfb/encoders/index.js';
import type { Encoder, Frame, PixelFormat } from '../../src/display/rfb/types.js';
import { finishRect, ZlibStreams } from '../../src/display/rfb/zlib-streams.js';
import { FORMATS, frame, gradient, mixed, text } from './content.js';

const N = Number(process.env.RUNS ?? 9);
const cpuMs = (from: NodeJS.CpuUsage, to: NodeJS.CpuUsage): number => (to.user - from.user + to.system - from.system) / 1000;

function textGradient(w: number, h: number): Frame {
  const f = frame(w, h);
  const t = text(w >> 1, h, 3);
  const g = gradient(w - (w >> 1), h);
  for (let y = 0; y < h; y++) {
    f.pixels.set(t.pixels.subarray(y * t.width, (y + 1) * t.width), y * w);
    f.pixels.set(g.pixels.subarray(y * g.width, (y + 1) * g.width), y * w + t.width);
  }
  return f;
}

const encoders: [string, Encoder][] = [
  ['Raw', encodeRaw],
  ['Hextile', encodeHextile],
  ['zlib', encodeZlib],
  ['ZRLE', encodeZrle],
  ['Tight', encodeTight],
];

async function run(label: string, f: Frame, pf: PixelFormat, level: number): Promise<void> {
  const rect = { x: 0, y: 0, w: f.width, h: f.height };
  console.log(`\n${label} (compress level ${level})`);
  console.log('encoder   encode ms (cpu)    zlib ms (cpu)   rects      bytes');
  for (const [name, enc] of encoders) {
    let bestEnc = [Infinity, 0];
    let bestZ = [Infinity, 0];
    let bytes = 0;
    let rects = 0;
    for (let i = 0; i < N; i++) {
      const streams = new ZlibStreams(level);
      const c0 = process.cpuUsage();
      const t0 = performance.now();
      const ers = enc(f, rect, pf, { compressLevel: level });
      const t1 = performance.now();
      const c1 = process.cpuUsage();
      bytes = 0;
      for (const er of ers) for (const p of await finishRect(er, streams)) bytes += p.length;
      const t2 = performance.now();
      const c2 = process.cpuUsage();
      bytes += 12 * ers.length;
      rects = ers.length;
      if (t1 - t0 < bestEnc[0]!) bestEnc = [t1 - t0, cpuMs(c0, c1)];
      if (t2 - t1 < bestZ[0]!) bestZ = [t2 - t1, cpuMs(c1, c2)];
      streams.close();
    }
    const fmt = ([w, c]: number[]) => `${w!.toFixed(1).padStart(7)} (${c!.toFixed(1).padStart(5)})`;
    console.log(`${name.padEnd(9)} ${fmt(bestEnc)}  ${fmt(bestZ)} ${String(rects).padStart(7)} ${String(bytes).padStart(10)}`);
  }
}

const level = Number(process.env.LEVEL ?? 2);
await run('1280x800 text + gradient, server format', textGradient(1280, 800), FORMATS[0]!.pf, level);
await run('1280x800 text + gradient, noVNC format', textGradient(1280, 800), FORMATS[1]!.pf, level);
await run('1280x800 mixed desktop (text, gradient, photo inset), server format', mixed(1280, 800), FORMATS[0]!.pf, level);
await run('1280x800 text + gradient, 16-bit 5-6-5', textGradient(1280, 800), FORMATS.find((x) => x.name.startsWith('16-bit'))!.pf, level);
