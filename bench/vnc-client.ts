// The measuring RFB client of the VNC benchmark (bench/vnc.ts). It behaves like noVNC 1.7:
// shared ClientInit, SetPixelFormat to noVNC's RGBX (32/24, little-endian, shifts 0/8/16),
// SetEncodings [Tight, ZRLE, Hextile, Raw, compress level 2, DesktopSize, ExtendedDesktopSize]
// (+ ContinuousUpdates when asked), a non-incremental full-screen request and then exactly one
// incremental full-screen FramebufferUpdateRequest outstanding, sent once the previous update
// is decoded. Every rectangle is really decoded into a client framebuffer with the reference
// decoders of the tests (test/rfb/decoders.ts), so the client pays what a real viewer pays.
//
// It runs in a worker thread (runClientWorker) so that decoding never delays the serial-console
// timestamps the main thread takes; times are absolute (performance.timeOrigin + now()), which
// is comparable across threads. The guest's latency marker is a run of pixels in row 0 whose
// colour is 0xA5 red, 0x5A blue and a code in green; the client reports each new code it sees.
import { connect, type Socket } from 'node:net';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import zlib from 'node:zlib';
import type { PixelFormat, Rect } from '../src/display/rfb/types.js';
import { Decoders, decodeHextile, decodeRaw, Inflater } from '../test/rfb/decoders.js';

// The reference Inflater inflates on the libuv pool and then waits a setImmediate: ~0.3 ms per
// rectangle, which made the client, not the server, the bottleneck with QEMU's many small Tight
// rectangles (150+ per update). noVNC inflates synchronously (pako); so does this client: the same
// persistent stream, driven through the zlib handle's synchronous write (what zlib.inflateSync
// uses internally, minus closing the stream after each call).
interface ZlibHandle {
  writeSync(flush: number, input: Buffer, inOff: number, inLen: number, out: Buffer, outOff: number, outLen: number): void;
}
type SyncZlib = zlib.Inflate & { _handle: ZlibHandle | null; _writeState: Uint32Array; error?: Error };
const syncInflaters = new WeakMap<Inflater, SyncZlib>();

function inflateSyncFlush(z: SyncZlib, input: Buffer): Buffer {
  const outs: Buffer[] = [];
  let inOff = 0;
  let availIn = input.length;
  for (;;) {
    const handle = z._handle;
    if (!handle || z.error) throw z.error ?? new Error('inflate: stream closed');
    const out = Buffer.allocUnsafe(256 * 1024);
    handle.writeSync(zlib.constants.Z_SYNC_FLUSH, input, inOff, availIn, out, 0, out.length);
    if (z.error) throw z.error;
    const availOut = z._writeState[0] as number;
    const availInAfter = z._writeState[1] as number;
    if (out.length - availOut > 0) outs.push(out.subarray(0, out.length - availOut));
    inOff += availIn - availInAfter;
    availIn = availInAfter;
    if (availOut !== 0) break; // output space left over: everything available was produced
  }
  return outs.length === 1 ? (outs[0] as Buffer) : Buffer.concat(outs);
}

Inflater.prototype.push = function (this: Inflater, data: Uint8Array): Promise<Buffer> {
  let z = syncInflaters.get(this);
  if (!z) {
    const nz = zlib.createInflate() as SyncZlib;
    nz.on('error', (e: Error) => {
      nz.error = e;
    });
    syncInflaters.set(this, nz);
    z = nz;
  }
  try {
    return Promise.resolve(inflateSyncFlush(z, Buffer.from(data.buffer, data.byteOffset, data.byteLength)));
  } catch (e) {
    return Promise.reject(e);
  }
};
const closeInflater = Inflater.prototype.close;
Inflater.prototype.close = function (this: Inflater): void {
  syncInflaters.get(this)?.close();
  syncInflaters.delete(this);
  closeInflater.call(this);
};

/** noVNC's pixel format: 32 bpp, depth 24, little-endian, R at bit 0, G at 8, B at 16. */
export const RGBX: PixelFormat = {
  bitsPerPixel: 32,
  depth: 24,
  bigEndian: false,
  trueColour: true,
  redMax: 255,
  greenMax: 255,
  blueMax: 255,
  redShift: 0,
  greenShift: 8,
  blueShift: 16,
};

export const ENC = {
  RAW: 0,
  COPY_RECT: 1,
  HEXTILE: 5,
  TIGHT: 7,
  ZRLE: 16,
  COMPRESS_2: -254,
  DESKTOP_SIZE: -223,
  LAST_RECT: -224,
  EXTENDED_DESKTOP_SIZE: -308,
  CONTINUOUS_UPDATES: -313,
} as const;

/** Where the guest writes its latency marker (row 0, x = MARKER_X .. MARKER_X + 15). */
export const MARKER_X = 8;

/** Absolute milliseconds, comparable between threads. */
export const absNow = (): number => performance.timeOrigin + performance.now();

export interface ClientOptions {
  host: string;
  port: number;
  /** Announce ContinuousUpdates and enable it when the server offers it. */
  continuous: boolean;
  /** Put CopyRect first in SetEncodings, as noVNC really does. */
  copyRect?: boolean;
}

export interface WindowStats {
  /** Window length (ms). */
  ms: number;
  /** FramebufferUpdates carrying pixels. */
  updates: number;
  /** Every byte received from the server in the window. */
  bytes: number;
  rects: number;
  /** Pixels decoded. */
  pixels: number;
  /** FBUR sent -> first byte of the FBU header, per update (request mode only). */
  requestToUpdateMs: number[];
  /** Time spent decoding (ms). */
  decodeMs: number;
  /** Encodings seen (number -> rect count). */
  encodings: Record<string, number>;
  /** The server used continuous updates in this window. */
  continuous: boolean;
  /** Tight rectangles by method (fill, copy = full colour, mono / indexed palette). */
  tight: { fill: number; copy: number; mono: number; indexed: number; uncompressed: number };
}

export type ClientEvent =
  | { type: 'ready'; width: number; height: number; t: number }
  | { type: 'marker'; code: number; t: number }
  | { type: 'resize'; width: number; height: number }
  | { type: 'window'; stats: WindowStats }
  | { type: 'error'; message: string };

/** An incoming byte stream read with `await take(n)`. */
class ByteQueue {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  private error: Error | null = null;

  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
    const w = this.waiter;
    if (w && this.length >= w.n) {
      this.waiter = null;
      w.resolve(this.takeNow(w.n));
    }
  }

  fail(e: Error): void {
    this.error = e;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(e);
  }

  private takeNow(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0] as Buffer;
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0] as Buffer;
        const k = Math.min(c.length, n - at);
        c.copy(out, at, 0, k);
        at += k;
        if (k === c.length) this.chunks.shift();
        else this.chunks[0] = c.subarray(k);
      }
    }
    this.length -= n;
    return out;
  }

  take(n: number): Promise<Buffer> {
    if (this.length >= n) return Promise.resolve(this.takeNow(n));
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
    });
  }

  async u8(): Promise<number> {
    return (await this.take(1))[0] as number;
  }
  async u16(): Promise<number> {
    return (await this.take(2)).readUInt16BE(0);
  }
  async u32(): Promise<number> {
    return (await this.take(4)).readUInt32BE(0);
  }
}

function emptyStats(): WindowStats {
  return {
    ms: 0,
    updates: 0,
    bytes: 0,
    rects: 0,
    pixels: 0,
    requestToUpdateMs: [],
    decodeMs: 0,
    encodings: {},
    continuous: false,
    tight: { fill: 0, copy: 0, mono: 0, indexed: 0, uncompressed: 0 },
  };
}

/** One measuring viewer. Events go to `emit`. */
export class MeasuringClient {
  private readonly sock: Socket;
  private readonly q = new ByteQueue();
  private readonly decoders = new Decoders();
  private width = 0;
  private height = 0;
  private fb = new Uint32Array(0);
  private stats = emptyStats();
  private windowStart = 0;
  private inWindow = false;
  private fburSentAt = 0;
  private lastMarker = -1;
  private ready = false;
  private continuousOn = false;
  private closed = false;

  constructor(
    private readonly o: ClientOptions,
    private readonly emit: (e: ClientEvent) => void,
  ) {
    this.sock = connect({ host: o.host, port: o.port, noDelay: true });
    this.sock.on('data', (b: Buffer) => {
      if (this.inWindow) this.stats.bytes += b.length;
      this.q.push(b);
    });
    this.sock.on('error', (e) => this.q.fail(e));
    this.sock.on('close', () => this.q.fail(new Error('server closed the connection')));
    this.run().catch((e: Error) => {
      if (!this.closed) this.emit({ type: 'error', message: e.stack ?? e.message });
    });
  }

  private tightAtStart = { fill: 0, copy: 0, mono: 0, indexed: 0, uncompressed: 0 };

  startWindow(): void {
    this.stats = emptyStats();
    this.tightAtStart = { ...this.decoders.tight.stats };
    this.windowStart = absNow();
    this.inWindow = true;
  }

  endWindow(): WindowStats {
    this.inWindow = false;
    const s = this.stats;
    s.ms = absNow() - this.windowStart;
    s.continuous = this.continuousOn;
    const t = this.decoders.tight.stats;
    const a = this.tightAtStart;
    s.tight = {
      fill: t.fill - a.fill,
      copy: t.copy - a.copy,
      mono: t.mono - a.mono,
      indexed: t.indexed - a.indexed,
      uncompressed: t.uncompressed - a.uncompressed,
    };
    this.stats = emptyStats();
    return s;
  }

  close(): void {
    this.closed = true;
    this.sock.destroy();
    this.decoders.close();
  }

  private send(b: Buffer): void {
    this.sock.write(b);
  }

  private requestUpdate(incremental: boolean): void {
    const b = Buffer.alloc(10);
    b[0] = 3;
    b[1] = incremental ? 1 : 0;
    b.writeUInt16BE(this.width, 6);
    b.writeUInt16BE(this.height, 8);
    this.fburSentAt = absNow();
    this.send(b);
  }

  private resize(w: number, h: number): void {
    if (w === this.width && h === this.height) return;
    this.width = w;
    this.height = h;
    this.fb = new Uint32Array(w * h);
    this.emit({ type: 'resize', width: w, height: h });
  }

  private async run(): Promise<void> {
    const q = this.q;
    const version = (await q.take(12)).toString('latin1');
    if (!/^RFB 003\.\d{3}\n$/.test(version)) throw new Error(`not an RFB server: ${JSON.stringify(version)}`);
    this.send(Buffer.from('RFB 003.008\n'));
    const n = await q.u8();
    if (n === 0) {
      const len = await q.u32();
      throw new Error(`server refused: ${(await q.take(len)).toString()}`);
    }
    const types = [...(await q.take(n))];
    if (!types.includes(1)) throw new Error(`no None security (offered ${types.join(',')})`);
    this.send(Buffer.from([1]));
    const result = await q.u32();
    if (result !== 0) throw new Error(`security result ${result}`);
    this.send(Buffer.from([1])); // shared, like noVNC
    const init = await q.take(24);
    await q.take(init.readUInt32BE(20)); // name
    this.resize(init.readUInt16BE(0), init.readUInt16BE(2));

    const spf = Buffer.alloc(20);
    spf[0] = 0;
    spf[4] = 32;
    spf[5] = 24;
    spf[6] = 0; // little-endian
    spf[7] = 1; // true colour
    spf.writeUInt16BE(255, 8);
    spf.writeUInt16BE(255, 10);
    spf.writeUInt16BE(255, 12);
    spf[14] = 0;
    spf[15] = 8;
    spf[16] = 16;
    this.send(spf);
    const encodings: number[] = [ENC.TIGHT, ENC.ZRLE, ENC.HEXTILE, ENC.RAW, ENC.COMPRESS_2, ENC.DESKTOP_SIZE, ENC.EXTENDED_DESKTOP_SIZE];
    if (this.o.copyRect) encodings.unshift(ENC.COPY_RECT);
    if (this.o.continuous) encodings.push(ENC.CONTINUOUS_UPDATES);
    const se = Buffer.alloc(4 + 4 * encodings.length);
    se[0] = 2;
    se.writeUInt16BE(encodings.length, 2);
    for (const [i, e] of encodings.entries()) se.writeInt32BE(e, 4 + 4 * i);
    this.send(se);
    this.requestUpdate(false);

    for (;;) {
      const type = await q.u8();
      switch (type) {
        case 0:
          await this.framebufferUpdate();
          break;
        case 2: // bell
          break;
        case 3: {
          await q.take(3);
          const len = (await q.take(4)).readInt32BE(0);
          await q.take(Math.abs(len));
          break;
        }
        case 150: // EndOfContinuousUpdates: the server supports them
          if (this.o.continuous && !this.continuousOn) {
            this.continuousOn = true;
            const b = Buffer.alloc(10);
            b[0] = 150;
            b[1] = 1;
            b.writeUInt16BE(this.width, 6);
            b.writeUInt16BE(this.height, 8);
            this.send(b);
          }
          break;
        case 248: {
          await q.take(7);
          const len = await q.u8();
          await q.take(len);
          break;
        }
        default:
          throw new Error(`unexpected server message ${type}`);
      }
    }
  }

  private async framebufferUpdate(): Promise<void> {
    const q = this.q;
    const tHeader = absNow();
    await q.take(1);
    const nrects = await q.u16();
    const t0 = performance.now();
    let pixelRects = 0;
    for (let i = 0; i < nrects; i++) {
      const h = await q.take(12);
      const rect: Rect = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), w: h.readUInt16BE(4), h: h.readUInt16BE(6) };
      const enc = h.readInt32BE(8);
      if (enc === ENC.LAST_RECT) break;
      if (enc === ENC.DESKTOP_SIZE) {
        this.resize(rect.w, rect.h);
        continue;
      }
      if (enc === ENC.EXTENDED_DESKTOP_SIZE) {
        const screens = (await q.take(4))[0] as number;
        await q.take(16 * screens);
        this.resize(rect.w, rect.h);
        continue;
      }
      if (enc === ENC.COPY_RECT) {
        const src = await q.take(4);
        this.copyRect(rect, src.readUInt16BE(0), src.readUInt16BE(2));
        pixelRects++;
        if (this.inWindow) {
          this.stats.rects++;
          this.stats.encodings[enc] = (this.stats.encodings[enc] ?? 0) + 1;
        }
        continue;
      }
      const payload = await this.readPayload(rect, enc);
      const px = await this.decode(rect, enc, payload);
      if (rect.x + rect.w > this.width || rect.y + rect.h > this.height) throw new Error(`rect ${JSON.stringify(rect)} outside ${this.width}x${this.height}`);
      for (let y = 0; y < rect.h; y++) this.fb.set(px.subarray(y * rect.w, (y + 1) * rect.w), (rect.y + y) * this.width + rect.x);
      pixelRects++;
      if (this.inWindow) {
        this.stats.rects++;
        this.stats.pixels += rect.w * rect.h;
        this.stats.encodings[enc] = (this.stats.encodings[enc] ?? 0) + 1;
      }
    }
    const tDone = absNow();
    if (pixelRects > 0 && this.inWindow) {
      this.stats.updates++;
      this.stats.decodeMs += performance.now() - t0;
      if (!this.continuousOn) this.stats.requestToUpdateMs.push(tHeader - this.fburSentAt);
    }
    if (pixelRects > 0) {
      const v = this.fb[MARKER_X] ?? 0;
      if ((v & 0xff) === 0xa5 && ((v >>> 16) & 0xff) === 0x5a) {
        const code = (v >>> 8) & 0xff;
        if (code !== this.lastMarker) {
          this.lastMarker = code;
          this.emit({ type: 'marker', code, t: tDone });
        }
      }
      if (!this.ready) {
        this.ready = true;
        this.emit({ type: 'ready', width: this.width, height: this.height, t: tDone });
      }
    }
    // Like noVNC: the next (incremental) request once this update is decoded. Never a
    // non-incremental one after a size change: QEMU answers each of those with another
    // ExtendedDesktopSize rect, and the server sends every pixel after a resize anyway.
    if (!this.continuousOn) this.requestUpdate(true);
  }

  private copyRect(r: Rect, sx: number, sy: number): void {
    if (r.x + r.w > this.width || r.y + r.h > this.height || sx + r.w > this.width || sy + r.h > this.height)
      throw new Error('CopyRect outside the framebuffer');
    const W = this.width;
    if (r.x === 0 && sx === 0 && r.w === W) {
      this.fb.copyWithin(r.y * W, sy * W, (sy + r.h) * W); // whole rows: memmove
      return;
    }
    const tmp = new Uint32Array(r.w * r.h);
    for (let y = 0; y < r.h; y++) tmp.set(this.fb.subarray((sy + y) * W + sx, (sy + y) * W + sx + r.w), y * r.w);
    for (let y = 0; y < r.h; y++) this.fb.set(tmp.subarray(y * r.w, (y + 1) * r.w), (r.y + y) * W + r.x);
  }

  private async readPayload(rect: Rect, enc: number): Promise<Buffer> {
    const q = this.q;
    const bpp = 4;
    switch (enc) {
      case ENC.RAW:
        return q.take(rect.w * rect.h * bpp);
      case ENC.ZRLE: {
        const len = await q.take(4);
        return Buffer.concat([len, await q.take(len.readUInt32BE(0))]);
      }
      case ENC.TIGHT: {
        const parts: Buffer[] = [];
        const control = await q.take(1);
        parts.push(control);
        const method = (control[0] as number) >> 4;
        const tpx = 3; // RGBX is 32/24 with 8-bit channels: TPIXEL = 3 bytes
        if (method === 8) {
          parts.push(await q.take(tpx));
          return Buffer.concat(parts);
        }
        if (method === 9) throw new Error('tight: JPEG was not asked for');
        if (method & 8) throw new Error(`tight: unknown compression control 0x${(control[0] as number).toString(16)}`);
        let filter = 0;
        if (method & 4) {
          const f = await q.take(1);
          parts.push(f);
          filter = f[0] as number;
        }
        let dataSize: number;
        if (filter === 1) {
          const nb = await q.take(1);
          parts.push(nb);
          const colours = (nb[0] as number) + 1;
          parts.push(await q.take(colours * tpx));
          dataSize = colours === 2 ? Math.ceil(rect.w / 8) * rect.h : rect.w * rect.h;
        } else dataSize = rect.w * rect.h * tpx; // copy (0); gradient (2) is rejected by the decoder
        if (dataSize < 12) {
          parts.push(await q.take(dataSize));
          return Buffer.concat(parts);
        }
        const l0 = await q.take(1);
        parts.push(l0);
        let len = (l0[0] as number) & 0x7f;
        if ((l0[0] as number) & 0x80) {
          const l1 = await q.take(1);
          parts.push(l1);
          len |= ((l1[0] as number) & 0x7f) << 7;
          if ((l1[0] as number) & 0x80) {
            const l2 = await q.take(1);
            parts.push(l2);
            len |= (l2[0] as number) << 14;
          }
        }
        parts.push(await q.take(len));
        return Buffer.concat(parts);
      }
      case ENC.HEXTILE: {
        const parts: Buffer[] = [];
        for (let ty = 0; ty < rect.h; ty += 16)
          for (let tx = 0; tx < rect.w; tx += 16) {
            const tw = Math.min(16, rect.w - tx);
            const th = Math.min(16, rect.h - ty);
            const m = await q.take(1);
            parts.push(m);
            const mask = m[0] as number;
            if (mask & 1) {
              parts.push(await q.take(tw * th * bpp));
              continue;
            }
            let k = 0;
            if (mask & 2) k += bpp;
            if (mask & 4) k += bpp;
            if (k) parts.push(await q.take(k));
            if (mask & 8) {
              const nb = await q.take(1);
              parts.push(nb);
              parts.push(await q.take((nb[0] as number) * (mask & 16 ? bpp + 2 : 2)));
            }
          }
        return Buffer.concat(parts);
      }
      default:
        throw new Error(`unexpected encoding ${enc}`);
    }
  }

  private decode(rect: Rect, enc: number, payload: Buffer): Promise<Uint32Array> | Uint32Array {
    switch (enc) {
      case ENC.RAW:
        return decodeRaw(payload, rect, RGBX);
      case ENC.HEXTILE:
        return decodeHextile(payload, rect, RGBX);
      case ENC.TIGHT:
        return this.decoders.tight.decode(payload, rect, RGBX);
      case ENC.ZRLE:
        return this.decoders.zrle.decode(payload, rect, RGBX);
      default:
        throw new Error(`unexpected encoding ${enc}`);
    }
  }
}

/** Messages from the main thread to a client worker. */
export type ClientCommand = { cmd: 'start-window' } | { cmd: 'end-window' } | { cmd: 'close' };

/** Worker entry: one MeasuringClient driven by ClientCommands, its events posted back. */
function runClientWorker(o: ClientOptions): void {
  const port = parentPort;
  if (!port) return;
  const client = new MeasuringClient(o, (e) => port.postMessage(e));
  port.on('message', (m: ClientCommand) => {
    if (m.cmd === 'start-window') client.startWindow();
    else if (m.cmd === 'end-window') port.postMessage({ type: 'window', stats: client.endWindow() } satisfies ClientEvent);
    else if (m.cmd === 'close') {
      client.close();
      port.close();
    }
  });
}

const wd = workerData as { kind?: string; options?: ClientOptions } | null;
if (!isMainThread && wd?.kind === 'vnc-measuring-client' && wd.options) runClientWorker(wd.options);
