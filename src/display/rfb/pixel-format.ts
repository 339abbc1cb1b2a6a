// RFB pixel formats: the 16-byte wire structure, validation of what clients ask
// for, and fast conversion of canonical 0x00RRGGBB frames into the client's
// pixels. Three byte layouts exist for a client pixel value:
//   PIXEL  – bitsPerPixel/8 bytes in the client's byte order (Raw, Hextile);
//   CPIXEL – ZRLE: 3 bytes when bpp is 32, depth ≤ 24 and all colour bits fit in
//            the least (preferred, per rfbproto) or most significant three bytes;
//   TPIXEL – Tight: 3 bytes R, G, B when bpp is 32, depth 24 and every channel
//            is exactly 8 bits wide (whatever the shifts and byte order).
// Conversion works on client pixel VALUES (a Uint32Array of what the client
// would read from memory as a bpp-bit integer); packers lay values out as bytes.
import type { Frame, PixelFormat, Rect } from './types.js';

/** What we advertise in ServerInit: XRGB8888 (32/24, little-endian, shifts 16/8/0), like QEMU. */
export const SERVER_FORMAT: Readonly<PixelFormat> = Object.freeze({
  bitsPerPixel: 32,
  depth: 24,
  bigEndian: false,
  trueColour: true,
  redMax: 255,
  greenMax: 255,
  blueMax: 255,
  redShift: 16,
  greenShift: 8,
  blueShift: 0,
});

/** Size of PIXEL_FORMAT on the wire. */
export const PIXEL_FORMAT_BYTES = 16;

const HOST_LE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * Reads the 16-byte PIXEL_FORMAT at `buf[at…]`. The result is not checked: pass it to
 * validatePixelFormat before use (bitsPerPixel may hold a value outside 8/16/32).
 */
export function parsePixelFormat(buf: Uint8Array, at: number): PixelFormat {
  if (at < 0 || at + PIXEL_FORMAT_BYTES > buf.length) throw new RangeError('PIXEL_FORMAT truncated');
  return {
    bitsPerPixel: buf[at] as 8 | 16 | 32,
    depth: buf[at + 1] as number,
    bigEndian: buf[at + 2] !== 0,
    trueColour: buf[at + 3] !== 0,
    redMax: ((buf[at + 4] as number) << 8) | (buf[at + 5] as number),
    greenMax: ((buf[at + 6] as number) << 8) | (buf[at + 7] as number),
    blueMax: ((buf[at + 8] as number) << 8) | (buf[at + 9] as number),
    redShift: buf[at + 10] as number,
    greenShift: buf[at + 11] as number,
    blueShift: buf[at + 12] as number,
  };
}

/** Writes the 16-byte PIXEL_FORMAT (3 trailing padding bytes zero). */
export function encodePixelFormat(pf: PixelFormat): Uint8Array {
  const b = new Uint8Array(PIXEL_FORMAT_BYTES);
  b[0] = pf.bitsPerPixel;
  b[1] = pf.depth;
  b[2] = pf.bigEndian ? 1 : 0;
  b[3] = pf.trueColour ? 1 : 0;
  b[4] = pf.redMax >> 8;
  b[5] = pf.redMax;
  b[6] = pf.greenMax >> 8;
  b[7] = pf.greenMax;
  b[8] = pf.blueMax >> 8;
  b[9] = pf.blueMax;
  b[10] = pf.redShift;
  b[11] = pf.greenShift;
  b[12] = pf.blueShift;
  return b;
}

/** Number of bits of a channel whose maximum is `max` (= 2^n − 1), or -1 if `max` is not of that form. */
function channelBits(max: number): number {
  if (!Number.isInteger(max) || max < 1 || max > 0xffff || (max & (max + 1)) !== 0) return -1;
  return 32 - Math.clz32(max);
}

/** Returns why `pf` cannot be served, or null if it can. */
export function validatePixelFormat(pf: PixelFormat): string | null {
  const bpp = pf.bitsPerPixel as number;
  if (bpp !== 8 && bpp !== 16 && bpp !== 32) return `bits-per-pixel ${bpp} is not 8, 16 or 32`;
  if (!pf.trueColour) return 'colour-map pixel formats are not supported (true colour only)';
  if (!Number.isInteger(pf.depth) || pf.depth < 1 || pf.depth > bpp) return `depth ${pf.depth} does not fit ${bpp} bits per pixel`;
  const channels: [string, number, number][] = [
    ['red', pf.redMax, pf.redShift],
    ['green', pf.greenMax, pf.greenShift],
    ['blue', pf.blueMax, pf.blueShift],
  ];
  const masks: number[] = [];
  for (const [name, max, shift] of channels) {
    const bits = channelBits(max);
    if (bits < 0) return `${name}-max ${max} is not 2^n-1`;
    if (!Number.isInteger(shift) || shift < 0 || shift >= bpp) return `${name}-shift ${shift} is not below ${bpp}`;
    if (shift + bits > bpp) return `${name} channel (${bits} bits at ${shift}) does not fit ${bpp} bits per pixel`;
    masks.push(((max << shift) >>> 0) as number);
  }
  const [r, g, b] = masks as [number, number, number];
  if ((r & g) !== 0 || (r & b) !== 0 || (g & b) !== 0) return 'colour channels overlap';
  return null;
}

/** A stable key: formats with the same key produce identical bytes for every encoding. */
export function pixelFormatKey(pf: PixelFormat): string {
  const order = pf.bitsPerPixel === 8 ? 'x' : pf.bigEndian ? 'be' : 'le';
  return `${pf.bitsPerPixel}/${pf.depth}/${order}/${pf.trueColour ? 't' : 'c'}/${pf.redMax},${pf.greenMax},${pf.blueMax}/${pf.redShift},${pf.greenShift},${pf.blueShift}`;
}

/** True when converting a canonical pixel for `pf` is the identity (XRGB8888 values). */
export function isIdentityFormat(pf: PixelFormat): boolean {
  return (
    pf.bitsPerPixel === 32 && pf.redMax === 255 && pf.greenMax === 255 && pf.blueMax === 255 && pf.redShift === 16 && pf.greenShift === 8 && pf.blueShift === 0
  );
}

function all8Bit(pf: PixelFormat): boolean {
  return pf.redMax === 255 && pf.greenMax === 255 && pf.blueMax === 255;
}

// ---------------------------------------------------------------------------
// Byte layouts of a client pixel value.

enum Layout {
  B1,
  LE2,
  BE2,
  LE4,
  BE4,
  /** Bytes 0..2 of the little-endian value: v, v>>8, v>>16. */
  LE3Low,
  /** The three least significant bytes, big-endian: v>>16, v>>8, v. */
  BE3Low,
  /** The three most significant bytes, little-endian: v>>8, v>>16, v>>24. */
  LE3High,
  /** The three most significant bytes, big-endian: v>>24, v>>16, v>>8. */
  BE3High,
  /** Tight's TPIXEL: R, G, B bytes extracted with the format's shifts. */
  RGB3,
}

/** Lays client pixel values out as bytes. */
export interface PixelPacker {
  readonly bytesPerPixel: 1 | 2 | 3 | 4;
  /** The client pixel value of canonical colour `rgb` (0x00RRGGBB). */
  value(rgb: number): number;
  /** Writes canonical colour `rgb` at `dst[at…]`; returns the offset after it. */
  write(dst: Uint8Array, at: number, rgb: number): number;
  /** Writes client pixel value `v`; returns the offset after it. */
  writeValue(dst: Uint8Array, at: number, v: number): number;
  /** Writes `count` values `src[from…]`; returns the offset after them. */
  writeValues(dst: Uint8Array, at: number, src: Uint32Array, from: number, count: number): number;
}

type ValueFn = (rgb: number) => number;

function makeValueFn(pf: PixelFormat): ValueFn {
  if (isIdentityFormat(pf)) return (rgb) => rgb & 0xffffff;
  const rs = pf.redShift;
  const gs = pf.greenShift;
  const bs = pf.blueShift;
  if (all8Bit(pf)) return (rgb) => ((((rgb >>> 16) & 255) << rs) | (((rgb >>> 8) & 255) << gs) | ((rgb & 255) << bs)) >>> 0;
  const t = channelTables(pf);
  const rt = t.r;
  const gt = t.g;
  const bt = t.b;
  return (rgb) => (rt[(rgb >>> 16) & 255]! | gt[(rgb >>> 8) & 255]! | bt[rgb & 255]!) >>> 0;
}

/** 8-bit intensity → shifted channel value: the top n bits for n ≤ 8, scaled for wider channels. */
function channelTable(max: number, shift: number): Uint32Array {
  const t = new Uint32Array(256);
  const bits = channelBits(max);
  for (let c = 0; c < 256; c++) {
    const v = bits <= 8 ? c >> (8 - bits) : Math.round((c * max) / 255);
    t[c] = (v * 2 ** shift) >>> 0;
  }
  return t;
}

interface ChannelTables {
  r: Uint32Array;
  g: Uint32Array;
  b: Uint32Array;
}

const tableCache = new Map<string, ChannelTables>();
function channelTables(pf: PixelFormat): ChannelTables {
  const key = `${pf.redMax},${pf.greenMax},${pf.blueMax}/${pf.redShift},${pf.greenShift},${pf.blueShift}`;
  let t = tableCache.get(key);
  if (!t) {
    t = { r: channelTable(pf.redMax, pf.redShift), g: channelTable(pf.greenMax, pf.greenShift), b: channelTable(pf.blueMax, pf.blueShift) };
    tableCache.set(key, t);
  }
  return t;
}

type WriteFn = (dst: Uint8Array, at: number, v: number) => number;
type WriteManyFn = (dst: Uint8Array, at: number, src: Uint32Array, from: number, count: number) => number;

function layoutBytes(l: Layout): 1 | 2 | 3 | 4 {
  switch (l) {
    case Layout.B1:
      return 1;
    case Layout.LE2:
    case Layout.BE2:
      return 2;
    case Layout.LE4:
    case Layout.BE4:
      return 4;
    default:
      return 3;
  }
}

function writerFor(l: Layout, pf: PixelFormat): WriteFn {
  switch (l) {
    case Layout.B1:
      return (d, at, v) => {
        d[at] = v;
        return at + 1;
      };
    case Layout.LE2:
      return (d, at, v) => {
        d[at] = v;
        d[at + 1] = v >>> 8;
        return at + 2;
      };
    case Layout.BE2:
      return (d, at, v) => {
        d[at] = v >>> 8;
        d[at + 1] = v;
        return at + 2;
      };
    case Layout.LE4:
      return (d, at, v) => {
        d[at] = v;
        d[at + 1] = v >>> 8;
        d[at + 2] = v >>> 16;
        d[at + 3] = v >>> 24;
        return at + 4;
      };
    case Layout.BE4:
      return (d, at, v) => {
        d[at] = v >>> 24;
        d[at + 1] = v >>> 16;
        d[at + 2] = v >>> 8;
        d[at + 3] = v;
        return at + 4;
      };
    case Layout.LE3Low:
      return (d, at, v) => {
        d[at] = v;
        d[at + 1] = v >>> 8;
        d[at + 2] = v >>> 16;
        return at + 3;
      };
    case Layout.BE3Low:
      return (d, at, v) => {
        d[at] = v >>> 16;
        d[at + 1] = v >>> 8;
        d[at + 2] = v;
        return at + 3;
      };
    case Layout.LE3High:
      return (d, at, v) => {
        d[at] = v >>> 8;
        d[at + 1] = v >>> 16;
        d[at + 2] = v >>> 24;
        return at + 3;
      };
    case Layout.BE3High:
      return (d, at, v) => {
        d[at] = v >>> 24;
        d[at + 1] = v >>> 16;
        d[at + 2] = v >>> 8;
        return at + 3;
      };
    case Layout.RGB3: {
      const rs = pf.redShift;
      const gs = pf.greenShift;
      const bs = pf.blueShift;
      return (d, at, v) => {
        d[at] = v >>> rs;
        d[at + 1] = v >>> gs;
        d[at + 2] = v >>> bs;
        return at + 3;
      };
    }
  }
}

function manyWriterFor(l: Layout, one: WriteFn, pf: PixelFormat): WriteManyFn {
  switch (l) {
    case Layout.B1:
      return (d, at, s, from, n) => {
        for (let i = 0; i < n; i++) d[at + i] = s[from + i]!;
        return at + n;
      };
    case Layout.LE4:
    case Layout.BE4: {
      const swap = (l === Layout.BE4) === HOST_LE;
      if (!swap) {
        // The values' in-memory bytes are the client's bytes: copy them, whatever the alignment.
        let lastSrc: Uint32Array | null = null;
        let bytes: Uint8Array = new Uint8Array(0);
        return (d, at, s, from, n) => {
          if (s !== lastSrc || bytes.byteLength !== s.byteLength) {
            lastSrc = s;
            bytes = new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
          }
          const b = from * 4;
          const len = n * 4;
          if (len >= 256) d.set(bytes.subarray(b, b + len), at);
          else for (let i = 0; i < len; i++) d[at + i] = bytes[b + i]!;
          return at + len;
        };
      }
      if (l === Layout.LE4)
        return (d, at, s, from, n) => {
          let o = at;
          for (let i = 0; i < n; i++) {
            const v = s[from + i]!;
            d[o] = v;
            d[o + 1] = v >>> 8;
            d[o + 2] = v >>> 16;
            d[o + 3] = v >>> 24;
            o += 4;
          }
          return o;
        };
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) {
          const v = s[from + i]!;
          d[o] = v >>> 24;
          d[o + 1] = v >>> 16;
          d[o + 2] = v >>> 8;
          d[o + 3] = v;
          o += 4;
        }
        return o;
      };
    }
    case Layout.LE2:
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) {
          const v = s[from + i]!;
          d[o] = v;
          d[o + 1] = v >>> 8;
          o += 2;
        }
        return o;
      };
    case Layout.BE2:
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) {
          const v = s[from + i]!;
          d[o] = v >>> 8;
          d[o + 1] = v;
          o += 2;
        }
        return o;
      };
    case Layout.LE3Low:
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) {
          const v = s[from + i]!;
          d[o] = v;
          d[o + 1] = v >>> 8;
          d[o + 2] = v >>> 16;
          o += 3;
        }
        return o;
      };
    case Layout.RGB3: {
      const rs = pf.redShift;
      const gs = pf.greenShift;
      const bs = pf.blueShift;
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) {
          const v = s[from + i]!;
          d[o] = v >>> rs;
          d[o + 1] = v >>> gs;
          d[o + 2] = v >>> bs;
          o += 3;
        }
        return o;
      };
    }
    default:
      return (d, at, s, from, n) => {
        let o = at;
        for (let i = 0; i < n; i++) o = one(d, o, s[from + i]!);
        return o;
      };
  }
}

function makePacker(pf: PixelFormat, l: Layout): PixelPacker {
  const value = makeValueFn(pf);
  const writeValue = writerFor(l, pf);
  return {
    bytesPerPixel: layoutBytes(l),
    value,
    writeValue,
    write: (d, at, rgb) => writeValue(d, at, value(rgb)),
    writeValues: manyWriterFor(l, writeValue, pf),
  };
}

function pixelLayout(pf: PixelFormat): Layout {
  if (pf.bitsPerPixel === 8) return Layout.B1;
  if (pf.bitsPerPixel === 16) return pf.bigEndian ? Layout.BE2 : Layout.LE2;
  return pf.bigEndian ? Layout.BE4 : Layout.LE4;
}

function colourMask(pf: PixelFormat): number {
  return ((pf.redMax << pf.redShift) | (pf.greenMax << pf.greenShift) | (pf.blueMax << pf.blueShift)) >>> 0;
}

function cpixelLayout(pf: PixelFormat): Layout {
  if (pf.bitsPerPixel !== 32 || pf.depth > 24 || !pf.trueColour) return pixelLayout(pf);
  const mask = colourMask(pf);
  // rfbproto: "the three least significant bytes are used when both … would cover the used bits".
  if ((mask & 0xff000000) === 0) return pf.bigEndian ? Layout.BE3Low : Layout.LE3Low;
  if ((mask & 0xff) === 0) return pf.bigEndian ? Layout.BE3High : Layout.LE3High;
  return pixelLayout(pf);
}

function tpixelLayout(pf: PixelFormat): Layout {
  if (pf.bitsPerPixel === 32 && pf.depth === 24 && pf.trueColour && all8Bit(pf)) return Layout.RGB3;
  return pixelLayout(pf);
}

/** Bytes per ZRLE CPIXEL for `pf`. */
export function cpixelBytes(pf: PixelFormat): 1 | 2 | 3 | 4 {
  return layoutBytes(cpixelLayout(pf));
}

/** Bytes per Tight TPIXEL for `pf`. */
export function tpixelBytes(pf: PixelFormat): 1 | 2 | 3 | 4 {
  return layoutBytes(tpixelLayout(pf));
}

const packerCache = new Map<string, PixelPacker>();
function cachedPacker(kind: string, pf: PixelFormat, layout: (pf: PixelFormat) => Layout): PixelPacker {
  const key = kind + pixelFormatKey(pf);
  let p = packerCache.get(key);
  if (!p) {
    p = makePacker(pf, layout(pf));
    packerCache.set(key, p);
  }
  return p;
}

/** PIXEL packer: bitsPerPixel/8 bytes in the client's byte order. */
export function makePixelPacker(pf: PixelFormat): PixelPacker {
  return cachedPacker('P', pf, pixelLayout);
}

/** ZRLE CPIXEL packer. */
export function makeCPixelPacker(pf: PixelFormat): PixelPacker {
  return cachedPacker('C', pf, cpixelLayout);
}

/** Tight TPIXEL packer. */
export function makeTPixelPacker(pf: PixelFormat): PixelPacker {
  return cachedPacker('T', pf, tpixelLayout);
}

/** Writes canonical colour `rgb` as a ZRLE CPIXEL; returns the offset after it. */
export function writeCPixel(pf: PixelFormat, dst: Uint8Array, at: number, rgb: number): number {
  return makeCPixelPacker(pf).write(dst, at, rgb);
}

/** Writes canonical colour `rgb` as a Tight TPIXEL; returns the offset after it. */
export function writeTPixel(pf: PixelFormat, dst: Uint8Array, at: number, rgb: number): number {
  return makeTPixelPacker(pf).write(dst, at, rgb);
}

// ---------------------------------------------------------------------------
// Bulk conversion.

function checkRect(frame: Frame, rect: Rect): void {
  const { x, y, w, h } = rect;
  if (!(x >= 0 && y >= 0 && w >= 0 && h >= 0 && x + w <= frame.width && y + h <= frame.height))
    throw new RangeError(`rect ${w}x${h}+${x}+${y} outside ${frame.width}x${frame.height} frame`);
  if (frame.pixels.length < frame.width * frame.height) throw new RangeError('frame pixels shorter than width × height');
}

/**
 * Client pixel values of `rect` (row-major, stride rect.w) into `out` (allocated when absent or
 * too small); returns the array holding them.
 */
export function toClientValues(frame: Frame, rect: Rect, pf: PixelFormat, out?: Uint32Array): Uint32Array {
  checkRect(frame, rect);
  const { x, y, w, h } = rect;
  const n = w * h;
  const dst = out && out.length >= n ? out : new Uint32Array(n);
  const src = frame.pixels;
  const fw = frame.width;
  if (isIdentityFormat(pf)) {
    for (let row = 0; row < h; row++) {
      const s = (y + row) * fw + x;
      dst.set(src.subarray(s, s + w), row * w);
    }
    return dst;
  }
  if (all8Bit(pf)) {
    const rs = pf.redShift;
    const gs = pf.greenShift;
    const bs = pf.blueShift;
    for (let row = 0, o = 0; row < h; row++) {
      const s = (y + row) * fw + x;
      for (let i = s, e = s + w; i < e; i++) {
        const p = src[i]!;
        dst[o++] = (((p >>> 16) & 255) << rs) | (((p >>> 8) & 255) << gs) | ((p & 255) << bs);
      }
    }
    return dst;
  }
  const { r: rt, g: gt, b: bt } = channelTables(pf);
  for (let row = 0, o = 0; row < h; row++) {
    const s = (y + row) * fw + x;
    for (let i = s, e = s + w; i < e; i++) {
      const p = src[i]!;
      dst[o++] = rt[(p >>> 16) & 255]! | gt[(p >>> 8) & 255]! | bt[p & 255]!;
    }
  }
  return dst;
}

/**
 * Converts `rect` of `frame` into client-format PIXELs at `dst[at…]` (Raw layout, rows packed);
 * returns the number of bytes written (w × h × bytesPerPixel).
 */
export function convertRect(frame: Frame, rect: Rect, pf: PixelFormat, dst: Uint8Array, at = 0): number {
  checkRect(frame, rect);
  const { x, y, w, h } = rect;
  const bpp = pf.bitsPerPixel >> 3;
  const total = w * h * bpp;
  if (at < 0 || at + total > dst.length) throw new RangeError('convertRect: destination too small');
  const src = frame.pixels;
  const fw = frame.width;
  if (bpp === 4 && all8Bit(pf)) {
    const identity = isIdentityFormat(pf);
    const rs = pf.redShift;
    const gs = pf.greenShift;
    const bs = pf.blueShift;
    const nativeOrder = pf.bigEndian !== HOST_LE;
    if (((dst.byteOffset + at) & 3) === 0) {
      const out = new Uint32Array(dst.buffer, dst.byteOffset + at, w * h);
      for (let row = 0, o = 0; row < h; row++) {
        const s = (y + row) * fw + x;
        if (identity && nativeOrder) {
          out.set(src.subarray(s, s + w), o);
          o += w;
          continue;
        }
        for (let i = s, e = s + w; i < e; i++) {
          const p = src[i]!;
          const v = identity ? p : (((p >>> 16) & 255) << rs) | (((p >>> 8) & 255) << gs) | ((p & 255) << bs);
          out[o++] = nativeOrder ? v : ((v & 0xff) << 24) | ((v & 0xff00) << 8) | ((v >>> 8) & 0xff00) | (v >>> 24);
        }
      }
      return total;
    }
    const be = pf.bigEndian;
    for (let row = 0, o = at; row < h; row++) {
      const s = (y + row) * fw + x;
      for (let i = s, e = s + w; i < e; i++) {
        const p = src[i]!;
        const v = identity ? p : (((p >>> 16) & 255) << rs) | (((p >>> 8) & 255) << gs) | ((p & 255) << bs);
        if (be) {
          dst[o] = v >>> 24;
          dst[o + 1] = v >>> 16;
          dst[o + 2] = v >>> 8;
          dst[o + 3] = v;
        } else {
          dst[o] = v;
          dst[o + 1] = v >>> 8;
          dst[o + 2] = v >>> 16;
          dst[o + 3] = v >>> 24;
        }
        o += 4;
      }
    }
    return total;
  }
  const { r: rt, g: gt, b: bt } = channelTables(pf);
  const be = pf.bigEndian;
  let o = at;
  for (let row = 0; row < h; row++) {
    const s = (y + row) * fw + x;
    for (let i = s, e = s + w; i < e; i++) {
      const p = src[i]!;
      const v = rt[(p >>> 16) & 255]! | gt[(p >>> 8) & 255]! | bt[p & 255]!;
      if (bpp === 1) dst[o++] = v;
      else if (bpp === 2) {
        if (be) {
          dst[o] = v >>> 8;
          dst[o + 1] = v;
        } else {
          dst[o] = v;
          dst[o + 1] = v >>> 8;
        }
        o += 2;
      } else {
        if (be) {
          dst[o] = v >>> 24;
          dst[o + 1] = v >>> 16;
          dst[o + 2] = v >>> 8;
          dst[o + 3] = v;
        } else {
          dst[o] = v;
          dst[o + 1] = v >>> 8;
          dst[o + 2] = v >>> 16;
          dst[o + 3] = v >>> 24;
        }
        o += 4;
      }
    }
  }
  return total;
}
