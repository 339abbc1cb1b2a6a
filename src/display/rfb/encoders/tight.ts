// Tight (encoding 7), lossless by default.
//
// The rectangle is cut into bands of 64 rows; each band into 64-pixel tiles
// classified as solid, palette (2–16 colours) or full colour. Neighbouring
// tiles are merged left to right (never wider than Tight's 2048-pixel limit)
// and every merged rectangle is sent as
//   Fill      – one solid colour: control 0x80 + TPIXEL;
//   mono      – 2 colours: palette filter, 1 bit per pixel (rows byte-aligned,
//               MSB = leftmost), zlib stream 1;
//   indexed   – 3–16 colours: palette filter, 1 byte per pixel, zlib stream 2;
//   copy      – TPIXELs, zlib stream 0;
// or, only when a lossy hook is installed AND the client sent a quality level,
// JPEG for full-colour rectangles (control 0x90 + compact length + JFIF).
// Data shorter than 12 bytes goes out uncompressed: that rule, the compact
// length and the zlib step belong to the session (zlib-streams.ts finishRect).
import { makeTPixelPacker, type PixelPacker } from '../pixel-format.js';
import type { EncodedRect, EncodeOptions, Encoder, Frame, Piece, PixelFormat, Rect } from '../types.js';
import { isEmpty, rectValues } from './common.js';

export const TIGHT = 7;

/** Tight's maximum rectangle width. */
export const TIGHT_MAX_WIDTH = 2048;
/** Uncompressed data shorter than this is sent as is (rfbproto). */
export const TIGHT_MIN_TO_COMPRESS = 12;

export const TightStream = { Copy: 0, Mono: 1, Indexed: 2 } as const;

const FILL = 0x80;
const JPEG = 0x90;
const READ_FILTER = 0x40;
const FILTER_PALETTE = 1;

const TILE = 64;
const MAX_PALETTE = 16;

enum Kind {
  Solid,
  Palette,
  Full,
}

/**
 * Optional lossy mode (off unless installed with makeTightEncoder). `jpeg` receives the
 * rectangle as packed RGB (3 bytes per pixel, canonical colours, not the client's format) and
 * the client's quality level 0–9; it returns a JFIF stream, or null to stay lossless.
 */
export interface TightLossyHook {
  jpeg(rgb: Uint8Array, width: number, height: number, quality: number): Uint8Array | null;
  /** Smallest area (pixels) worth trying JPEG on; default 4096. */
  minArea?: number;
}

export interface TightEncoderOptions {
  lossy?: TightLossyHook;
}

// Scratch for one band: per tile its kind and palette.
let tileKind = new Uint8Array(64);
let tileCount = new Uint8Array(64);
let tilePalette = new Uint32Array(64 * MAX_PALETTE);
const groupPalette = new Uint32Array(MAX_PALETTE);

function ensureTiles(n: number): void {
  if (tileKind.length >= n) return;
  tileKind = new Uint8Array(n);
  tileCount = new Uint8Array(n);
  tilePalette = new Uint32Array(n * MAX_PALETTE);
}

/** Classifies the tile at `base` (stride W): fills its palette; returns the number of colours, or 17 when > 16. */
function classify(vals: Uint32Array, base: number, W: number, tw: number, th: number, pal: Uint32Array, palAt: number): number {
  let n = 1;
  let last = vals[base]!;
  pal[palAt] = last;
  for (let r = 0; r < th; r++) {
    const row = base + r * W;
    for (let c = 0; c < tw; c++) {
      const v = vals[row + c]!;
      if (v === last) continue;
      last = v;
      let j = 0;
      while (j < n && pal[palAt + j] !== v) j++;
      if (j === n) {
        if (n === MAX_PALETTE) return MAX_PALETTE + 1;
        pal[palAt + n++] = v;
      }
    }
  }
  return n;
}

/** Adds tile t's colours to the group palette if the union stays ≤ 16; returns the new size or -1. */
function mergePalette(gn: number, t: number): number {
  const n = tileCount[t]!;
  const at = t * MAX_PALETTE;
  let size = gn;
  for (let i = 0; i < n; i++) {
    const v = tilePalette[at + i]!;
    let j = 0;
    while (j < size && groupPalette[j] !== v) j++;
    if (j === size) {
      if (size === MAX_PALETTE) return -1; // groupPalette keeps the added colours; the caller restarts the group anyway
      groupPalette[size++] = v;
    }
  }
  return size;
}

function header(control: number, extra: number): Uint8Array {
  const b = new Uint8Array(1 + extra);
  b[0] = control;
  return b;
}

function fillRect(rect: Rect, colour: number, tp: PixelPacker): EncodedRect {
  const b = header(FILL, tp.bytesPerPixel);
  tp.writeValue(b, 1, colour);
  return { rect, encoding: TIGHT, pieces: [{ kind: 'raw', bytes: b }] };
}

function paletteRect(vals: Uint32Array, W: number, rect: Rect, rx: number, ry: number, n: number, tp: PixelPacker): EncodedRect {
  const { w, h } = rect;
  const mono = n === 2;
  const stream = mono ? TightStream.Mono : TightStream.Indexed;
  const head = header(READ_FILTER | (stream << 4), 2 + n * tp.bytesPerPixel);
  head[1] = FILTER_PALETTE;
  head[2] = n - 1;
  tp.writeValues(head, 3, groupPalette, 0, n);
  let data: Uint8Array;
  if (mono) {
    const c0 = groupPalette[0]!;
    const rowBytes = (w + 7) >> 3;
    data = new Uint8Array(rowBytes * h);
    for (let y = 0, o = 0; y < h; y++) {
      const row = (ry + y) * W + rx;
      let acc = 0;
      let bit = 0;
      for (let x = 0; x < w; x++) {
        acc = (acc << 1) | (vals[row + x] === c0 ? 0 : 1);
        if (++bit === 8) {
          data[o++] = acc;
          acc = 0;
          bit = 0;
        }
      }
      if (bit !== 0) data[o++] = acc << (8 - bit);
    }
  } else {
    data = new Uint8Array(w * h);
    let last = groupPalette[0]!;
    let lastIdx = 0;
    for (let y = 0, o = 0; y < h; y++) {
      const row = (ry + y) * W + rx;
      for (let x = 0; x < w; x++) {
        const v = vals[row + x]!;
        if (v !== last) {
          let j = 0;
          while (groupPalette[j] !== v) j++;
          last = v;
          lastIdx = j;
        }
        data[o++] = lastIdx;
      }
    }
  }
  return { rect, encoding: TIGHT, pieces: [{ kind: 'raw', bytes: head } as Piece, { kind: 'zlib', stream, framing: 'compact', bytes: data }] };
}

function copyRect(vals: Uint32Array, W: number, rect: Rect, rx: number, ry: number, tp: PixelPacker): EncodedRect {
  const { w, h } = rect;
  const data = new Uint8Array(w * h * tp.bytesPerPixel);
  for (let y = 0, at = 0; y < h; y++) at = tp.writeValues(data, at, vals, (ry + y) * W + rx, w);
  return {
    rect,
    encoding: TIGHT,
    pieces: [
      { kind: 'raw', bytes: header(TightStream.Copy << 4, 0) },
      { kind: 'zlib', stream: TightStream.Copy, framing: 'compact', bytes: data },
    ],
  };
}

/** Tight compact length (1–3 bytes, 7 bits per byte, least significant first). */
export function compactLength(n: number): Uint8Array {
  if (n < 0 || n > 0x3fffff) throw new RangeError(`Tight length ${n} out of range`);
  if (n < 0x80) return Uint8Array.of(n);
  if (n < 0x4000) return Uint8Array.of((n & 0x7f) | 0x80, n >> 7);
  return Uint8Array.of((n & 0x7f) | 0x80, ((n >> 7) & 0x7f) | 0x80, n >> 14);
}

function jpegRect(frame: Frame, rect: Rect, hook: TightLossyHook, quality: number): EncodedRect | null {
  const { x, y, w, h } = rect;
  const rgb = new Uint8Array(w * h * 3);
  const src = frame.pixels;
  for (let r = 0, o = 0; r < h; r++) {
    const s = (y + r) * frame.width + x;
    for (let i = s; i < s + w; i++) {
      const p = src[i]!;
      rgb[o++] = p >>> 16;
      rgb[o++] = p >>> 8;
      rgb[o++] = p;
    }
  }
  const jpeg = hook.jpeg(rgb, w, h, quality);
  if (!jpeg || jpeg.length > 0x3fffff) return null;
  const len = compactLength(jpeg.length);
  const head = new Uint8Array(1 + len.length);
  head[0] = JPEG;
  head.set(len, 1);
  return { rect, encoding: TIGHT, pieces: [{ kind: 'raw', bytes: head } as Piece, { kind: 'raw', bytes: jpeg }] };
}

// Solid-area search (after QEMU's find_best_solid_area): the rectangle is cut into SB×SB blocks;
// maximal rectangles of solid blocks of one colour covering at least MIN_SOLID_AREA pixels go out
// as Fill, and the rest is cut into horizontal slabs (at band and solid-area edges) whose free
// runs go through the 64-pixel tile logic.
const SB = 16;
const MIN_SOLID_AREA = 4096;
let blockColour = new Uint32Array(64);
/** 0 not solid, 1 solid and free, 2 taken by a Fill area. */
let blockState = new Uint8Array(64);

function ensureBlocks(n: number): void {
  if (blockState.length >= n) return;
  blockState = new Uint8Array(n);
  blockColour = new Uint32Array(n);
}

/** Solid Fill areas of `vals` (W×H) as flat [x0, y0, x1, y1, colour, …] in pixels, relative to the rectangle. */
function findSolidAreas(vals: Uint32Array, W: number, H: number): number[] {
  const out: number[] = [];
  if (W * H < MIN_SOLID_AREA) return out;
  const nbx = Math.ceil(W / SB);
  const nby = Math.ceil(H / SB);
  ensureBlocks(nbx * nby);
  let any = false;
  for (let by = 0; by < nby; by++) {
    const y0 = by * SB;
    const bh = Math.min(SB, H - y0);
    for (let bx = 0; bx < nbx; bx++) {
      const x0 = bx * SB;
      const bw = Math.min(SB, W - x0);
      const base = y0 * W + x0;
      const c = vals[base]!;
      let solid = 1;
      for (let r = 0; r < bh && solid; r++) {
        const row = base + r * W;
        for (let i = row, e = row + bw; i < e; i++)
          if (vals[i] !== c) {
            solid = 0;
            break;
          }
      }
      const b = by * nbx + bx;
      blockState[b] = solid;
      blockColour[b] = c;
      if (solid) any = true;
    }
  }
  if (!any) return out;
  for (let by = 0; by < nby; by++)
    for (let bx = 0; bx < nbx; bx++) {
      const b0 = by * nbx + bx;
      if (blockState[b0] !== 1) continue;
      const c = blockColour[b0]!;
      // Widest run on the first row, then narrowing row by row; keep the largest area.
      let wmax = nbx - bx;
      let best = 0;
      let bestW = 0;
      let bestH = 0;
      for (let r = by; r < nby; r++) {
        const rb = r * nbx + bx;
        let w = 0;
        while (w < wmax && blockState[rb + w] === 1 && blockColour[rb + w] === c) w++;
        if (w === 0) break;
        wmax = w;
        const area = (Math.min((bx + w) * SB, W) - bx * SB) * (Math.min((r + 1) * SB, H) - by * SB);
        if (area > best) {
          best = area;
          bestW = w;
          bestH = r - by + 1;
        }
      }
      if (best < MIN_SOLID_AREA) continue;
      for (let r = by; r < by + bestH; r++) blockState.fill(2, r * nbx + bx, r * nbx + bx + bestW);
      out.push(bx * SB, by * SB, Math.min((bx + bestW) * SB, W), Math.min((by + bestH) * SB, H), c);
    }
  return out;
}

/** A Tight encoder; without options it is lossless (no JPEG ever). */
export function makeTightEncoder(options: TightEncoderOptions = {}): Encoder {
  const lossy = options.lossy;
  return (frame: Frame, rect: Rect, pf: PixelFormat, opts: EncodeOptions): EncodedRect[] => {
    if (isEmpty(rect)) return [];
    const useJpeg = lossy !== undefined && opts.quality !== undefined && pf.bitsPerPixel !== 8;
    const minJpegArea = lossy?.minArea ?? 4096;
    const vals = rectValues(frame, rect, pf);
    const tp = makeTPixelPacker(pf);
    const W = rect.w;
    const H = rect.h;
    const result: EncodedRect[] = [];

    /** Encodes columns [x0, x1) of rows [by, by + bh) (bh ≤ 64) with the tile logic. */
    const run = (x0: number, x1: number, by: number, bh: number): void => {
      const RW = x1 - x0;
      const nt = Math.ceil(RW / TILE);
      ensureTiles(nt);
      for (let t = 0; t < nt; t++) {
        const tx = t * TILE;
        const n = classify(vals, by * W + x0 + tx, W, Math.min(TILE, RW - tx), bh, tilePalette, t * MAX_PALETTE);
        tileKind[t] = n === 1 ? Kind.Solid : n <= MAX_PALETTE ? Kind.Palette : Kind.Full;
        tileCount[t] = n <= MAX_PALETTE ? n : 0;
      }

      // Merge tiles left to right into groups of one kind.
      let g0 = 0; // first tile of the current group
      let gKind = tileKind[0]! as Kind;
      let gn = 0;
      if (gKind !== Kind.Full) gn = mergePalette(0, 0);
      const emit = (t0: number, t1: number): void => {
        const rx = x0 + t0 * TILE;
        const r: Rect = { x: rect.x + rx, y: rect.y + by, w: Math.min(t1 * TILE, RW) - t0 * TILE, h: bh };
        if (gKind === Kind.Solid) result.push(fillRect(r, groupPalette[0]!, tp));
        else if (gKind === Kind.Palette) result.push(paletteRect(vals, W, r, rx, by, gn, tp));
        else {
          const j = useJpeg && r.w * r.h >= minJpegArea ? jpegRect(frame, r, lossy, opts.quality!) : null;
          result.push(j ?? copyRect(vals, W, r, rx, by, tp));
        }
      };
      for (let t = 1; t < nt; t++) {
        const k = tileKind[t]! as Kind;
        let joined = false;
        if ((t - g0) * TILE < TIGHT_MAX_WIDTH) {
          if (gKind === Kind.Solid) joined = k === Kind.Solid && tilePalette[t * MAX_PALETTE] === groupPalette[0];
          else if (gKind === Kind.Palette) {
            if (k !== Kind.Full) {
              const merged = mergePalette(gn, t);
              if (merged > 0) {
                gn = merged;
                joined = true;
              }
            }
          } else joined = k === Kind.Full;
        }
        if (joined) continue;
        // mergePalette may have grown groupPalette past gn before failing: the group is emitted with gn colours only.
        emit(g0, t);
        g0 = t;
        gKind = k;
        gn = k === Kind.Full ? 0 : mergePalette(0, t);
      }
      emit(g0, nt);
    };

    const solids = findSolidAreas(vals, W, H);
    if (solids.length === 0) {
      for (let by = 0; by < H; by += TILE) run(0, W, by, Math.min(TILE, H - by));
      return result;
    }
    // Fill areas, at most 2048 wide each.
    for (let i = 0; i < solids.length; i += 5) {
      const [sx0, sy0, sx1, sy1, c] = [solids[i]!, solids[i + 1]!, solids[i + 2]!, solids[i + 3]!, solids[i + 4]!];
      for (let x = sx0; x < sx1; x += TIGHT_MAX_WIDTH)
        result.push(fillRect({ x: rect.x + x, y: rect.y + sy0, w: Math.min(TIGHT_MAX_WIDTH, sx1 - x), h: sy1 - sy0 }, c, tp));
    }
    // Slab edges: every 64 rows plus the top and bottom of every Fill area.
    const edges: number[] = [];
    for (let y = 0; y < H; y += TILE) edges.push(y);
    for (let i = 0; i < solids.length; i += 5) edges.push(solids[i + 1]!, solids[i + 3]!);
    edges.push(H);
    edges.sort((a, b) => a - b);
    const inSlab: number[] = [];
    for (let e = 0; e + 1 < edges.length; e++) {
      const y0 = edges[e]!;
      const y1 = edges[e + 1]!;
      if (y1 === y0) continue;
      inSlab.length = 0;
      for (let i = 0; i < solids.length; i += 5) if (solids[i + 1]! <= y0 && solids[i + 3]! >= y1) inSlab.push(i);
      inSlab.sort((a, b) => solids[a]! - solids[b]!);
      let x = 0;
      for (const i of inSlab) {
        if (solids[i]! > x) run(x, solids[i]!, y0, y1 - y0);
        x = solids[i + 2]!;
      }
      if (x < W) run(x, W, y0, y1 - y0);
    }
    return result;
  };
}

/** The default (lossless) Tight encoder. */
export const encodeTight: Encoder = makeTightEncoder();
