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
    const nt = Math.ceil(W / TILE);
    ensureTiles(nt);
    const result: EncodedRect[] = [];

    for (let by = 0; by < H; by += TILE) {
      const bh = Math.min(TILE, H - by);
      for (let t = 0; t < nt; t++) {
        const tx = t * TILE;
        const n = classify(vals, by * W + tx, W, Math.min(TILE, W - tx), bh, tilePalette, t * MAX_PALETTE);
        tileKind[t] = n === 1 ? Kind.Solid : n <= MAX_PALETTE ? Kind.Palette : Kind.Full;
        tileCount[t] = n <= MAX_PALETTE ? n : 0;
      }

      // Merge tiles left to right into groups of one kind.
      let g0 = 0; // first tile of the current group
      let gKind = tileKind[0]! as Kind;
      let gn = 0;
      if (gKind !== Kind.Full) gn = mergePalette(0, 0);
      const emit = (t0: number, t1: number): void => {
        const rx = t0 * TILE;
        const r: Rect = { x: rect.x + rx, y: rect.y + by, w: Math.min(t1 * TILE, W) - rx, h: bh };
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
    }
    return result;
  };
}

/** The default (lossless) Tight encoder. */
export const encodeTight: Encoder = makeTightEncoder();
