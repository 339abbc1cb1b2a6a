// Reference RFB decoders for the tests, written from rfbproto independently of
// the encoders (no shared code): Raw, Hextile, ZRLE and Tight (fill, basic with
// copy and palette filters), each strict about the rules a real client relies
// on, plus an independent expected-pixel conversion. Decoders return client
// pixel VALUES (what the client reads as a bpp-bit integer).
import zlib from 'node:zlib';
import type { Frame, PixelFormat, Rect } from '../../src/display/rfb/types.js';

/** Expected client pixel values of `rect`: each channel scaled as floor(c · (max+1) / 256). */
export function expectedPixels(frame: Frame, rect: Rect, pf: PixelFormat): Uint32Array {
  const out = new Uint32Array(rect.w * rect.h);
  let o = 0;
  for (let y = rect.y; y < rect.y + rect.h; y++)
    for (let x = rect.x; x < rect.x + rect.w; x++) {
      const p = frame.pixels[y * frame.width + x] as number;
      const r = Math.floor((((p >> 16) & 255) * (pf.redMax + 1)) / 256);
      const g = Math.floor((((p >> 8) & 255) * (pf.greenMax + 1)) / 256);
      const b = Math.floor(((p & 255) * (pf.blueMax + 1)) / 256);
      out[o++] = r * 2 ** pf.redShift + g * 2 ** pf.greenShift + b * 2 ** pf.blueShift;
    }
  return out;
}

/** A bounds-checked big-endian reader. */
export class Reader {
  at = 0;
  constructor(readonly buf: Uint8Array) {}
  need(n: number): void {
    if (this.at + n > this.buf.length) throw new Error(`truncated: need ${n} at ${this.at} of ${this.buf.length}`);
  }
  u8(): number {
    this.need(1);
    return this.buf[this.at++] as number;
  }
  u16(): number {
    return (this.u8() << 8) | this.u8();
  }
  u32(): number {
    return ((this.u16() << 16) >>> 0) + this.u16();
  }
  bytes(n: number): Uint8Array {
    this.need(n);
    const b = this.buf.subarray(this.at, this.at + n);
    this.at += n;
    return b;
  }
  get left(): number {
    return this.buf.length - this.at;
  }
}

/** Reads `n` bytes as an unsigned integer in the given byte order. */
function readUint(b: Uint8Array, n: number, bigEndian: boolean): number {
  let v = 0;
  for (let i = 0; i < n; i++) {
    const byte = b[bigEndian ? i : n - 1 - i] as number;
    v = v * 256 + byte;
  }
  return v;
}

function readPixel(r: Reader, pf: PixelFormat): number {
  const n = pf.bitsPerPixel / 8;
  return readUint(r.bytes(n), n, pf.bigEndian);
}

function mask(pf: PixelFormat): number {
  return pf.redMax * 2 ** pf.redShift + pf.greenMax * 2 ** pf.greenShift + pf.blueMax * 2 ** pf.blueShift;
}

/** ZRLE CPIXEL: 3 bytes when 32 bpp, depth ≤ 24 and the colour bits fit in the low (preferred) or high 3 bytes. */
function readCPixel(r: Reader, pf: PixelFormat): number {
  if (pf.bitsPerPixel === 32 && pf.depth <= 24) {
    const m = mask(pf);
    const b = r.bytes(3);
    if (m < 2 ** 24) {
      // The three least significant bytes, in the client's byte order.
      return pf.bigEndian ? b[0]! * 65536 + b[1]! * 256 + b[2]! : b[2]! * 65536 + b[1]! * 256 + b[0]!;
    }
    if (m % 256 === 0) return (pf.bigEndian ? b[0]! * 65536 + b[1]! * 256 + b[2]! : b[2]! * 65536 + b[1]! * 256 + b[0]!) * 256;
    r.at -= 3;
  }
  return readPixel(r, pf);
}

/** Tight TPIXEL: R, G, B bytes when 32 bpp, depth 24 and all maxima 255. */
function readTPixel(r: Reader, pf: PixelFormat): number {
  if (pf.bitsPerPixel === 32 && pf.depth === 24 && pf.redMax === 255 && pf.greenMax === 255 && pf.blueMax === 255) {
    const b = r.bytes(3);
    return b[0]! * 2 ** pf.redShift + b[1]! * 2 ** pf.greenShift + b[2]! * 2 ** pf.blueShift;
  }
  return readPixel(r, pf);
}

export function decodeRaw(data: Uint8Array, rect: Rect, pf: PixelFormat): Uint32Array {
  const r = new Reader(data);
  const out = new Uint32Array(rect.w * rect.h);
  for (let i = 0; i < out.length; i++) out[i] = readPixel(r, pf);
  if (r.left !== 0) throw new Error(`raw: ${r.left} trailing bytes`);
  return out;
}

export function decodeHextile(data: Uint8Array, rect: Rect, pf: PixelFormat): Uint32Array {
  const r = new Reader(data);
  const out = new Uint32Array(rect.w * rect.h);
  let bg: number | null = null;
  let fg: number | null = null;
  for (let ty = 0; ty < rect.h; ty += 16)
    for (let tx = 0; tx < rect.w; tx += 16) {
      const tw = Math.min(16, rect.w - tx);
      const th = Math.min(16, rect.h - ty);
      const m = r.u8();
      if (m & 1) {
        for (let y = 0; y < th; y++) for (let x = 0; x < tw; x++) out[(ty + y) * rect.w + tx + x] = readPixel(r, pf);
        bg = null; // neither carries over a Raw tile
        fg = null;
        continue;
      }
      if (m & ~31) throw new Error(`hextile: unknown mask bits ${m}`);
      if (m & 2) bg = readPixel(r, pf);
      if (bg === null) throw new Error('hextile: background not specified after a raw tile / at start');
      if (m & 4) {
        if (m & 16) throw new Error('hextile: ForegroundSpecified with SubrectsColoured');
        fg = readPixel(r, pf);
      }
      for (let y = 0; y < th; y++) out.fill(bg, (ty + y) * rect.w + tx, (ty + y) * rect.w + tx + tw);
      if (m & 8) {
        const n = r.u8();
        for (let i = 0; i < n; i++) {
          let colour: number;
          if (m & 16) colour = readPixel(r, pf);
          else {
            if (fg === null) throw new Error('hextile: foreground used while undefined');
            colour = fg;
          }
          const xy = r.u8();
          const wh = r.u8();
          const sx = xy >> 4;
          const sy = xy & 15;
          const sw = (wh >> 4) + 1;
          const sh = (wh & 15) + 1;
          if (sx + sw > tw || sy + sh > th) throw new Error('hextile: subrect outside tile');
          for (let y = sy; y < sy + sh; y++) out.fill(colour, (ty + y) * rect.w + tx + sx, (ty + y) * rect.w + tx + sx + sw);
        }
      }
      if (m & 16) fg = null; // does not carry over a SubrectsColoured tile
    }
  if (r.left !== 0) throw new Error(`hextile: ${r.left} trailing bytes`);
  return out;
}

/** A client-side persistent inflater fed sync-flushed chunks. */
export class Inflater {
  #z = zlib.createInflate();
  #chunks: Buffer[] = [];
  #error: Error | null = null;
  constructor() {
    this.#z.on('data', (c: Buffer) => this.#chunks.push(c));
    this.#z.on('error', (e: Error) => {
      this.#error = e;
    });
  }
  async push(data: Uint8Array): Promise<Buffer> {
    if (this.#error) throw this.#error;
    await new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => reject(e);
      this.#z.once('error', fail);
      this.#z.write(data);
      this.#z.flush(zlib.constants.Z_SYNC_FLUSH, () => {
        this.#z.off('error', fail);
        if (this.#error) reject(this.#error);
        else resolve();
      });
    });
    await new Promise((resolve) => setImmediate(resolve));
    if (this.#error) throw this.#error;
    const out = Buffer.concat(this.#chunks);
    this.#chunks = [];
    return out;
  }
  close(): void {
    this.#z.destroy();
  }
}

function runLength(r: Reader): number {
  let n = 1;
  for (;;) {
    const b = r.u8();
    n += b;
    if (b !== 255) return n;
  }
}

/** ZRLE with its single persistent stream. */
export class ZrleDecoder {
  readonly inflater = new Inflater();

  async decode(payload: Uint8Array, rect: Rect, pf: PixelFormat): Promise<Uint32Array> {
    const outer = new Reader(payload);
    const len = outer.u32();
    const z = outer.bytes(len);
    if (outer.left !== 0) throw new Error('zrle: trailing bytes after zlib data');
    const r = new Reader(await this.inflater.push(z));
    const out = new Uint32Array(rect.w * rect.h);
    for (let ty = 0; ty < rect.h; ty += 64)
      for (let tx = 0; tx < rect.w; tx += 64) {
        const tw = Math.min(64, rect.w - tx);
        const th = Math.min(64, rect.h - ty);
        const put = (i: number, v: number): void => {
          out[(ty + Math.floor(i / tw)) * rect.w + tx + (i % tw)] = v;
        };
        const sub = r.u8();
        const rle = (sub & 128) !== 0;
        const palSize = sub & 127;
        if ((palSize > 16 && !rle) || sub === 129) throw new Error(`zrle: invalid subencoding ${sub}`);
        const palette: number[] = [];
        for (let i = 0; i < palSize; i++) palette.push(readCPixel(r, pf));
        const total = tw * th;
        if (!rle) {
          if (palSize === 0) for (let i = 0; i < total; i++) put(i, readCPixel(r, pf));
          else if (palSize === 1) for (let i = 0; i < total; i++) put(i, palette[0]!);
          else {
            const bits = palSize === 2 ? 1 : palSize <= 4 ? 2 : 4;
            for (let y = 0; y < th; y++) {
              const row = r.bytes(Math.ceil((tw * bits) / 8));
              for (let x = 0; x < tw; x++) {
                const bitPos = x * bits;
                const idx = ((row[bitPos >> 3] as number) >> (8 - bits - (bitPos & 7))) & ((1 << bits) - 1);
                if (idx >= palSize) throw new Error('zrle: packed index outside palette');
                put(y * tw + x, palette[idx]!);
              }
            }
          }
        } else {
          let i = 0;
          while (i < total) {
            let v: number;
            let n = 1;
            if (palSize === 0) {
              v = readCPixel(r, pf);
              n = runLength(r);
            } else {
              const b = r.u8();
              const idx = b & 127;
              if (idx >= palSize) throw new Error('zrle: RLE index outside palette');
              v = palette[idx]!;
              if (b & 128) n = runLength(r);
            }
            if (i + n > total) throw new Error('zrle: run past the end of the tile');
            for (let k = 0; k < n; k++) put(i++, v);
          }
        }
      }
    if (r.left !== 0) throw new Error(`zrle: ${r.left} trailing bytes in the tile stream`);
    return out;
  }

  close(): void {
    this.inflater.close();
  }
}

/** Tight with its four persistent streams (lossless subset: fill and basic with copy/palette filters). */
export class TightDecoder {
  inflaters: Inflater[] = [new Inflater(), new Inflater(), new Inflater(), new Inflater()];
  /** Counts of rectangles per method, for tests that check what was chosen. */
  stats = { fill: 0, copy: 0, mono: 0, indexed: 0, uncompressed: 0 };

  async decode(payload: Uint8Array, rect: Rect, pf: PixelFormat): Promise<Uint32Array> {
    if (rect.w > 2048) throw new Error('tight: rectangle wider than 2048');
    const r = new Reader(payload);
    const control = r.u8();
    for (let i = 0; i < 4; i++)
      if (control & (1 << i)) {
        this.inflaters[i]!.close();
        this.inflaters[i] = new Inflater();
      }
    const method = control >> 4;
    const out = new Uint32Array(rect.w * rect.h);
    if (method === 8) {
      out.fill(readTPixel(r, pf));
      this.stats.fill++;
      if (r.left !== 0) throw new Error('tight: trailing bytes after fill');
      return out;
    }
    if (method & 8) throw new Error(`tight: unsupported compression ${method.toString(2)}`);
    const stream = method & 3;
    const filter = method & 4 ? r.u8() : 0;
    let palette: number[] = [];
    let bitsPerIndex = 0;
    let dataSize: number;
    if (filter === 0) dataSize = rect.w * rect.h * (readTPixelSize(pf) as number);
    else if (filter === 1) {
      const n = r.u8() + 1;
      if (n < 2) throw new Error('tight: palette of one colour');
      palette = [];
      for (let i = 0; i < n; i++) palette.push(readTPixel(r, pf));
      bitsPerIndex = n === 2 ? 1 : 8;
      dataSize = n === 2 ? Math.ceil(rect.w / 8) * rect.h : rect.w * rect.h;
    } else throw new Error(`tight: unsupported filter ${filter}`);
    let data: Uint8Array;
    if (dataSize < 12) {
      data = r.bytes(dataSize);
      this.stats.uncompressed++;
    } else {
      let len = r.u8();
      if (len & 0x80) {
        const b2 = r.u8();
        len = (len & 0x7f) | ((b2 & 0x7f) << 7);
        if (b2 & 0x80) len |= r.u8() << 14;
      }
      data = await this.inflaters[stream]!.push(r.bytes(len));
      if (data.length !== dataSize) throw new Error(`tight: inflated ${data.length} bytes, expected ${dataSize}`);
    }
    if (r.left !== 0) throw new Error(`tight: ${r.left} trailing bytes`);
    const d = new Reader(data);
    if (filter === 0) {
      for (let i = 0; i < out.length; i++) out[i] = readTPixel(d, pf);
      this.stats.copy++;
    } else if (bitsPerIndex === 1) {
      const rowBytes = Math.ceil(rect.w / 8);
      for (let y = 0; y < rect.h; y++)
        for (let x = 0; x < rect.w; x++) out[y * rect.w + x] = palette[((data[y * rowBytes + (x >> 3)] as number) >> (7 - (x & 7))) & 1]!;
      this.stats.mono++;
    } else {
      for (let i = 0; i < out.length; i++) {
        const idx = data[i] as number;
        if (idx >= palette.length) throw new Error('tight: index outside palette');
        out[i] = palette[idx]!;
      }
      this.stats.indexed++;
    }
    return out;
  }

  close(): void {
    for (const z of this.inflaters) z.close();
  }
}

function readTPixelSize(pf: PixelFormat): number {
  return pf.bitsPerPixel === 32 && pf.depth === 24 && pf.redMax === 255 && pf.greenMax === 255 && pf.blueMax === 255 ? 3 : pf.bitsPerPixel / 8;
}

/** zlib encoding (6): U32 length + zlib of Raw, one persistent stream. */
export class ZlibDecoder {
  readonly inflater = new Inflater();
  async decode(payload: Uint8Array, rect: Rect, pf: PixelFormat): Promise<Uint32Array> {
    const r = new Reader(payload);
    const len = r.u32();
    const z = r.bytes(len);
    if (r.left !== 0) throw new Error('zlib: trailing bytes');
    return decodeRaw(await this.inflater.push(z), rect, pf);
  }
  close(): void {
    this.inflater.close();
  }
}

/** A client's decoders with their persistent zlib streams. */
export class Decoders {
  readonly zrle = new ZrleDecoder();
  readonly tight = new TightDecoder();
  readonly zlib = new ZlibDecoder();
  close(): void {
    this.zrle.close();
    this.tight.close();
    this.zlib.close();
  }
}

/** A client: a framebuffer of pixel values plus decoders (pass the same Decoders to keep streams across framebuffers). */
export class Client {
  readonly fb: Uint32Array;
  /** How many times each pixel was written (to check rectangles tile without overlap). */
  readonly coverage: Uint8Array;
  readonly zrle: ZrleDecoder;
  readonly tight: TightDecoder;
  readonly zlib: ZlibDecoder;

  constructor(
    readonly width: number,
    readonly height: number,
    readonly pf: PixelFormat,
    readonly decoders = new Decoders(),
  ) {
    this.fb = new Uint32Array(width * height);
    this.coverage = new Uint8Array(width * height);
    this.zrle = decoders.zrle;
    this.tight = decoders.tight;
    this.zlib = decoders.zlib;
  }

  async apply(rect: Rect, encoding: number, payload: Uint8Array): Promise<void> {
    if (rect.x + rect.w > this.width || rect.y + rect.h > this.height) throw new Error('rect outside the framebuffer');
    let px: Uint32Array;
    switch (encoding) {
      case 0:
        px = decodeRaw(payload, rect, this.pf);
        break;
      case 5:
        px = decodeHextile(payload, rect, this.pf);
        break;
      case 6:
        px = await this.zlib.decode(payload, rect, this.pf);
        break;
      case 7:
        px = await this.tight.decode(payload, rect, this.pf);
        break;
      case 16:
        px = await this.zrle.decode(payload, rect, this.pf);
        break;
      default:
        throw new Error(`unknown encoding ${encoding}`);
    }
    for (let y = 0; y < rect.h; y++) {
      this.fb.set(px.subarray(y * rect.w, (y + 1) * rect.w), (rect.y + y) * this.width + rect.x);
      for (let x = 0; x < rect.w; x++) this.coverage[(rect.y + y) * this.width + rect.x + x]!++;
    }
  }

  /** The client's pixels of `rect`. */
  region(rect: Rect): Uint32Array {
    const out = new Uint32Array(rect.w * rect.h);
    for (let y = 0; y < rect.h; y++) out.set(this.fb.subarray((rect.y + y) * this.width + rect.x, (rect.y + y) * this.width + rect.x + rect.w), y * rect.w);
    return out;
  }

  close(): void {
    this.decoders.close();
  }
}
