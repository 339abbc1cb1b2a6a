// Deterministic test pictures (canonical 0x00RRGGBB frames) and the client
// pixel formats the encoders are checked against.
import type { Frame, PixelFormat } from '../../src/display/rfb/types.js';

/** A small deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function frame(width: number, height: number, fill = 0): Frame {
  return { width, height, pixels: new Uint32Array(width * height).fill(fill) };
}

export function solid(w: number, h: number, colour = 0x3366cc): Frame {
  return frame(w, h, colour);
}

/** Dark glyph-like strokes on a light background (exactly two colours). */
export function text(w: number, h: number, seed = 1, bg = 0xf0f0f0, fg = 0x202020): Frame {
  const f = frame(w, h, bg);
  const rand = rng(seed);
  for (let line = 2; line + 10 < h; line += 14)
    for (let x = 2; x + 6 < w; x += 7) {
      if (rand() < 0.15) continue; // word gaps
      const glyph = Math.floor(rand() * 0xffffff);
      for (let gy = 0; gy < 9; gy++)
        for (let gx = 0; gx < 5; gx++) if ((glyph >> ((gy * 5 + gx) % 24)) & 1 && (gy + gx) % 3 !== 0) f.pixels[(line + gy) * w + x + gx] = fg;
    }
  return f;
}

/** A 16-colour picture: blocks, stripes and runs of varying length. */
export function colours16(w: number, h: number, seed = 2): Frame {
  const f = frame(w, h);
  const rand = rng(seed);
  const pal: number[] = [];
  for (let i = 0; i < 16; i++) pal.push(Math.floor(rand() * 0xffffff));
  let i = 0;
  while (i < w * h) {
    const c = pal[Math.floor(rand() * 16)]!;
    const run = 1 + Math.floor(rand() * rand() * 40);
    for (let k = 0; k < run && i < w * h; k++) f.pixels[i++] = c;
  }
  return f;
}

export function gradient(w: number, h: number): Frame {
  const f = frame(w, h);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const r = Math.floor((x * 255) / Math.max(1, w - 1));
      const g = Math.floor((y * 255) / Math.max(1, h - 1));
      const b = (x + 2 * y) & 255;
      f.pixels[y * w + x] = (r << 16) | (g << 8) | b;
    }
  return f;
}

/** Photo-like noise: a smooth field plus random jitter (every pixel distinct-ish). */
export function photo(w: number, h: number, seed = 3): Frame {
  const f = frame(w, h);
  const rand = rng(seed);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const j = () => Math.floor(rand() * 48);
      const r = (Math.floor(128 + 100 * Math.sin(x / 17 + y / 29)) + j()) & 255;
      const g = (Math.floor(128 + 100 * Math.cos(x / 23 - y / 13)) + j()) & 255;
      const b = (Math.floor(((x ^ y) & 127) * 1.5) + j()) & 255;
      f.pixels[y * w + x] = (r << 16) | (g << 8) | b;
    }
  return f;
}

/** Fully random pixels (incompressible). */
export function noise(w: number, h: number, seed = 4): Frame {
  const f = frame(w, h);
  const rand = rng(seed);
  for (let i = 0; i < w * h; i++) f.pixels[i] = Math.floor(rand() * 0x1000000);
  return f;
}

function blit(dst: Frame, src: Frame, x0: number, y0: number): void {
  for (let y = 0; y < src.height && y0 + y < dst.height; y++)
    for (let x = 0; x < src.width && x0 + x < dst.width; x++) dst.pixels[(y0 + y) * dst.width + x0 + x] = src.pixels[y * src.width + x]!;
}

/** A desktop-like frame: title bars, a text window, a gradient panel and a photo inset. */
export function mixed(w: number, h: number, seed = 5): Frame {
  const f = frame(w, h, 0x2e3440);
  const bar = frame(w, Math.min(24, h), 0xd8dee9);
  blit(f, bar, 0, 0);
  blit(f, text(Math.floor(w * 0.55), Math.floor(h * 0.7), seed), 8, Math.min(32, h));
  blit(f, gradient(Math.floor(w * 0.35), Math.floor(h * 0.4)), Math.floor(w * 0.6), Math.min(32, h));
  blit(f, photo(Math.floor(w * 0.3), Math.floor(h * 0.3), seed), Math.floor(w * 0.62), Math.floor(h * 0.5));
  blit(f, colours16(Math.floor(w * 0.3), Math.floor(h * 0.1), seed), 8, Math.floor(h * 0.82));
  return f;
}

export interface Content {
  name: string;
  frame: Frame;
}

/** Varied content and awkward sizes (tile edges, 1×1, wider than Tight's 2048). */
export function contents(): Content[] {
  return [
    { name: 'solid 1x1', frame: solid(1, 1) },
    { name: 'solid 100x70', frame: solid(100, 70, 0xabcdef) },
    { name: 'text 17x33', frame: text(17, 33, 7) },
    { name: 'text 200x150', frame: text(200, 150, 8) },
    { name: '16 colours 130x67', frame: colours16(130, 67) },
    { name: 'gradient 97x65', frame: gradient(97, 65) },
    { name: 'photo 65x129', frame: photo(65, 129) },
    { name: 'noise 31x17', frame: noise(31, 17) },
    { name: 'mixed 320x200', frame: mixed(320, 200) },
    { name: 'gradient 2049x5', frame: gradient(2049, 5) },
    { name: 'text 1x40', frame: text(1, 40) },
    { name: 'noise 3x1', frame: noise(3, 1) },
  ];
}

const pf = (bitsPerPixel: 8 | 16 | 32, depth: number, bigEndian: boolean, maxes: [number, number, number], shifts: [number, number, number]): PixelFormat => ({
  bitsPerPixel,
  depth,
  bigEndian,
  trueColour: true,
  redMax: maxes[0],
  greenMax: maxes[1],
  blueMax: maxes[2],
  redShift: shifts[0],
  greenShift: shifts[1],
  blueShift: shifts[2],
});

/** Pixel formats seen from real clients plus CPIXEL corner cases. */
export const FORMATS: { name: string; pf: PixelFormat }[] = [
  { name: 'server XRGB8888', pf: pf(32, 24, false, [255, 255, 255], [16, 8, 0]) },
  { name: 'noVNC 32/24 LE 0/8/16', pf: pf(32, 24, false, [255, 255, 255], [0, 8, 16]) },
  { name: 'big-endian 32/24 16/8/0', pf: pf(32, 24, true, [255, 255, 255], [16, 8, 0]) },
  { name: '32/24 high bytes LE 24/16/8', pf: pf(32, 24, false, [255, 255, 255], [24, 16, 8]) },
  { name: '32/24 high bytes BE 8/16/24', pf: pf(32, 24, true, [255, 255, 255], [8, 16, 24]) },
  { name: '32/32 LE (no 3-byte pixels)', pf: pf(32, 32, false, [255, 255, 255], [16, 8, 0]) },
  { name: '16-bit 5-6-5 LE', pf: pf(16, 16, false, [31, 63, 31], [11, 5, 0]) },
  { name: '15-bit 5-5-5 BE', pf: pf(16, 15, true, [31, 31, 31], [10, 5, 0]) },
  { name: 'Remmina 16/15 11/6/1', pf: pf(16, 15, false, [31, 31, 31], [11, 6, 1]) },
  { name: '8-bit BGR233', pf: pf(8, 8, false, [7, 7, 3], [0, 3, 6]) },
];
