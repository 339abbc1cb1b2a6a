// A small raw RFB client for the server tests: TCP, protocol 3.3/3.7/3.8 (any
// 12-byte version string can be sent), security None and VNC authentication,
// SetPixelFormat / SetEncodings / FramebufferUpdateRequest and the extension
// messages, and a message loop that decodes every update with the reference
// decoders (decoders.ts) into a client-side framebuffer of pixel values.
import { connect, type Socket } from 'node:net';
import { encodePixelFormat, SERVER_FORMAT } from '../../src/display/rfb/pixel-format.js';
import type { Frame, PixelFormat, Rect } from '../../src/display/rfb/types.js';
import { respond } from '../../src/display/rfb/vnc-auth.js';
import { Client, Decoders, expectedPixels } from './decoders.js';

export const ENC = {
  RAW: 0,
  HEXTILE: 5,
  TIGHT: 7,
  ZRLE: 16,
  DESKTOP_SIZE: -223,
  LAST_RECT: -224,
  CURSOR: -239,
  QEMU_LED_STATE: -261,
  DESKTOP_NAME: -307,
  EXTENDED_DESKTOP_SIZE: -308,
  FENCE: -312,
  CONTINUOUS_UPDATES: -313,
} as const;

/** Buffered reads of exact byte counts from a socket. */
export class ByteReader {
  private chunks: Buffer[] = [];
  private length = 0;
  private waiter: { n: number; resolve: (b: Buffer) => void; reject: (e: Error) => void } | null = null;
  closed = false;
  /** Total bytes received. */
  received = 0;

  constructor(readonly sock: Socket) {
    sock.on('data', (b: Buffer) => {
      this.chunks.push(b);
      this.length += b.length;
      this.received += b.length;
      this.wake();
    });
    sock.on('close', () => {
      this.closed = true;
      this.wake();
    });
    sock.on('error', () => {});
  }

  get available(): number {
    return this.length;
  }

  private take(n: number): Buffer {
    let out: Buffer;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let at = 0;
      while (at < n) {
        const c = this.chunks[0]!;
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

  private wake(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.length >= w.n) {
      this.waiter = null;
      w.resolve(this.take(w.n));
    } else if (this.closed) {
      this.waiter = null;
      w.reject(new Error(`connection closed (wanted ${w.n} bytes, ${this.length} buffered)`));
    }
  }

  read(n: number): Promise<Buffer> {
    if (this.waiter) throw new Error('concurrent reads');
    if (n === 0) return Promise.resolve(Buffer.alloc(0));
    return new Promise((resolve, reject) => {
      this.waiter = { n, resolve, reject };
      this.wake();
    });
  }

  async u8(): Promise<number> {
    return (await this.read(1))[0]!;
  }
  async u16(): Promise<number> {
    return (await this.read(2)).readUInt16BE(0);
  }
  async u32(): Promise<number> {
    return (await this.read(4)).readUInt32BE(0);
  }
  async s32(): Promise<number> {
    return (await this.read(4)).readInt32BE(0);
  }
}

/** Collects the bytes a decoder needs while walking a rectangle's variable-length payload. */
class Payload {
  readonly parts: Buffer[] = [];
  constructor(private readonly r: ByteReader) {}
  async bytes(n: number): Promise<Buffer> {
    const b = await this.r.read(n);
    this.parts.push(b);
    return b;
  }
  async u8(): Promise<number> {
    return (await this.bytes(1))[0]!;
  }
  get data(): Buffer {
    return Buffer.concat(this.parts);
  }
}

export function tpixelSize(pf: PixelFormat): number {
  return pf.bitsPerPixel === 32 && pf.depth === 24 && pf.redMax === 255 && pf.greenMax === 255 && pf.blueMax === 255 ? 3 : pf.bitsPerPixel / 8;
}

export interface RectInfo extends Rect {
  encoding: number;
  /** ExtendedDesktopSize: x = reason, y = status, plus the screens. */
  screens?: { id: number; x: number; y: number; w: number; h: number; flags: number }[];
  /** Cursor pseudo-rect: pixels and mask as sent. */
  cursor?: Buffer;
}

export type ServerMessage =
  | { type: 'update'; rects: RectInfo[]; bytes: number; at: number }
  | { type: 'end-cu'; at: number }
  | { type: 'fence'; flags: number; payload: Buffer; at: number }
  | { type: 'bell'; at: number }
  | { type: 'cut-text'; text: Buffer; at: number }
  | { type: 'colour-map'; at: number };

export interface ConnectOptions {
  port: number;
  host?: string;
  /** The 12-byte version string to answer with (default "RFB 003.008\n"). */
  version?: string;
  password?: string;
  shared?: boolean;
}

export class HandshakeError extends Error {
  constructor(
    message: string,
    /** The failure reason string (3.8, or a 3.x security-type failure). */
    readonly reason: string | null,
  ) {
    super(message);
  }
}

export async function openSocket(port: number, host = '127.0.0.1'): Promise<Socket> {
  const sock = connect({ port, host, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  return sock;
}

/** Resolves when the socket is closed (by either side); rejects after `ms`. */
export function closedWithin(sock: Socket, ms: number): Promise<void> {
  if (sock.destroyed || sock.readyState === 'closed') return Promise.resolve();
  // A socket nobody reads from never notices the peer's FIN: read (and drop) what arrives.
  if (sock.listenerCount('data') === 0) sock.resume();
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`socket still open after ${ms} ms`)), ms);
    sock.once('close', () => {
      clearTimeout(t);
      resolve();
    });
  });
}

export class RfbClient {
  readonly reader: ByteReader;
  width = 0;
  height = 0;
  name = '';
  /** The format the server announced in ServerInit. */
  serverFormat: PixelFormat = SERVER_FORMAT;
  pf: PixelFormat = SERVER_FORMAT;
  readonly decoders = new Decoders();
  fb: Client = new Client(0, 0, SERVER_FORMAT, this.decoders);
  readonly messages: ServerMessage[] = [];
  updates = 0;
  /** noVNC style: answer every update with a new incremental full-screen request. */
  autoRequest = false;
  /** The first error of the message loop (a decoding failure or an unexpected message). */
  error: Error | null = null;
  private listeners = new Set<() => void>();
  private looping = false;
  private closedP: Promise<void>;

  private constructor(
    readonly sock: Socket,
    readonly minor: number,
  ) {
    this.reader = new ByteReader(sock);
    this.closedP = new Promise((resolve) => sock.once('close', () => resolve()));
    sock.on('close', () => this.notify());
  }

  /** Connects and completes the handshake; throws HandshakeError when the server refuses. */
  static async connect(o: ConnectOptions): Promise<RfbClient> {
    const sock = await openSocket(o.port, o.host);
    const version = o.version ?? 'RFB 003.008\n';
    const m = /^RFB 003\.(\d{3})\n$/.exec(version);
    const asked = m ? Number(m[1]) : 8;
    const minor = asked >= 8 ? 8 : asked === 7 ? 7 : 3;
    const c = new RfbClient(sock, minor);
    try {
      await c.handshake(version, o);
    } catch (e) {
      sock.destroy();
      c.decoders.close();
      throw e;
    }
    return c;
  }

  private async handshake(version: string, o: ConnectOptions): Promise<void> {
    const r = this.reader;
    const hello = (await r.read(12)).toString('latin1');
    if (hello !== 'RFB 003.008\n') throw new Error(`server version ${JSON.stringify(hello)}`);
    this.sock.write(version, 'latin1');
    let type: number;
    if (this.minor === 3) {
      type = await r.u32();
      if (type === 0) {
        const reason = (await r.read(await r.u32())).toString();
        throw new HandshakeError(`connection failed: ${reason}`, reason);
      }
    } else {
      const n = await r.u8();
      if (n === 0) {
        const reason = (await r.read(await r.u32())).toString();
        throw new HandshakeError(`connection failed: ${reason}`, reason);
      }
      const types = [...(await r.read(n))];
      type = o.password !== undefined && types.includes(2) ? 2 : types.includes(1) ? 1 : types[0]!;
      this.sock.write(Uint8Array.of(type));
    }
    if (type === 2) {
      const challenge = await r.read(16);
      this.sock.write(respond(o.password ?? '', challenge));
    } else if (type !== 1) throw new Error(`unsupported security type ${type}`);
    if (type === 2 || this.minor === 8) {
      const result = await r.u32();
      if (result !== 0) {
        const reason = this.minor === 8 ? (await r.read(await r.u32())).toString() : null;
        throw new HandshakeError(`security result ${result}${reason ? `: ${reason}` : ''}`, reason);
      }
    }
    this.sock.write(Uint8Array.of(o.shared === false ? 0 : 1));
    const init = await r.read(24);
    this.width = init.readUInt16BE(0);
    this.height = init.readUInt16BE(2);
    this.serverFormat = parsePf(init, 4);
    this.pf = this.serverFormat;
    this.name = (await r.read(init.readUInt32BE(20))).toString();
    this.fb = new Client(this.width, this.height, this.pf, this.decoders);
  }

  // ------------------------------------------------------------ sending

  write(b: Uint8Array): void {
    this.sock.write(b);
  }

  /** SetPixelFormat; the local framebuffer switches too (send it before requesting updates). */
  setPixelFormat(pf: PixelFormat): void {
    const b = Buffer.alloc(20);
    b.set(encodePixelFormat(pf), 4);
    this.write(b);
    this.pf = pf;
    this.fb = new Client(this.width, this.height, pf, this.decoders);
  }

  setEncodings(encodings: number[]): void {
    const b = Buffer.alloc(4 + 4 * encodings.length);
    b[0] = 2;
    b.writeUInt16BE(encodings.length, 2);
    for (const [i, e] of encodings.entries()) b.writeInt32BE(e, 4 + 4 * i);
    this.write(b);
  }

  static fburBytes(incremental: boolean, r: Rect): Buffer {
    const b = Buffer.alloc(10);
    b[0] = 3;
    b[1] = incremental ? 1 : 0;
    b.writeUInt16BE(r.x, 2);
    b.writeUInt16BE(r.y, 4);
    b.writeUInt16BE(r.w, 6);
    b.writeUInt16BE(r.h, 8);
    return b;
  }

  request(incremental: boolean, r: Rect = { x: 0, y: 0, w: this.width, h: this.height }): void {
    this.write(RfbClient.fburBytes(incremental, r));
  }

  enableContinuousUpdates(enable: boolean, r: Rect = { x: 0, y: 0, w: this.width, h: this.height }): void {
    const b = Buffer.alloc(10);
    b[0] = 150;
    b[1] = enable ? 1 : 0;
    b.writeUInt16BE(r.x, 2);
    b.writeUInt16BE(r.y, 4);
    b.writeUInt16BE(r.w, 6);
    b.writeUInt16BE(r.h, 8);
    this.write(b);
  }

  fence(flags: number, payload: Uint8Array): void {
    const b = Buffer.alloc(9 + payload.length);
    b[0] = 248;
    b.writeUInt32BE(flags >>> 0, 4);
    b[8] = payload.length;
    b.set(payload, 9);
    this.write(b);
  }

  setDesktopSize(width: number, height: number, screens = 1): void {
    const b = Buffer.alloc(8 + 16 * screens);
    b[0] = 251;
    b.writeUInt16BE(width, 2);
    b.writeUInt16BE(height, 4);
    b[6] = screens;
    for (let i = 0; i < screens; i++) {
      b.writeUInt32BE(i, 8 + 16 * i);
      b.writeUInt16BE(width, 8 + 16 * i + 8);
      b.writeUInt16BE(height, 8 + 16 * i + 10);
    }
    this.write(b);
  }

  // ------------------------------------------------------------ receiving

  /** Starts the message loop (updates are decoded into `fb`). */
  start(): this {
    if (!this.looping) {
      this.looping = true;
      void this.loop();
    }
    return this;
  }

  private notify(): void {
    for (const l of [...this.listeners]) l();
  }

  private push(m: ServerMessage): void {
    this.messages.push(m);
    if (m.type === 'update') {
      this.updates++;
      if (this.autoRequest && !this.sock.destroyed) this.request(true);
    }
    this.notify();
  }

  private async loop(): Promise<void> {
    const r = this.reader;
    try {
      for (;;) {
        const t = await r.u8();
        switch (t) {
          case 0:
            await this.readUpdate();
            break;
          case 1: {
            const h = await r.read(5);
            await r.read(6 * h.readUInt16BE(3));
            this.push({ type: 'colour-map', at: performance.now() });
            break;
          }
          case 2:
            this.push({ type: 'bell', at: performance.now() });
            break;
          case 3: {
            await r.read(3);
            const len = await r.s32();
            this.push({ type: 'cut-text', text: await r.read(Math.abs(len)), at: performance.now() });
            break;
          }
          case 150:
            this.push({ type: 'end-cu', at: performance.now() });
            break;
          case 248: {
            await r.read(3);
            const flags = await r.u32();
            const payload = await r.read(await r.u8());
            this.push({ type: 'fence', flags, payload, at: performance.now() });
            break;
          }
          default:
            throw new Error(`unknown server message type ${t}`);
        }
      }
    } catch (e) {
      if (!r.closed || r.available > 0) this.error ??= e as Error;
      this.notify();
    }
  }

  private async readUpdate(): Promise<void> {
    const r = this.reader;
    const before = r.received - r.available - 1;
    await r.read(1);
    const n = await r.u16();
    const rects: RectInfo[] = [];
    for (let i = 0; i < n || n === 0xffff; i++) {
      const h = await r.read(12);
      const rect: RectInfo = { x: h.readUInt16BE(0), y: h.readUInt16BE(2), w: h.readUInt16BE(4), h: h.readUInt16BE(6), encoding: h.readInt32BE(8) };
      rects.push(rect);
      if (rect.encoding === ENC.LAST_RECT) break;
      if (rect.encoding === ENC.DESKTOP_SIZE) {
        this.resizeTo(rect.w, rect.h);
        continue;
      }
      if (rect.encoding === ENC.EXTENDED_DESKTOP_SIZE) {
        const count = await r.u8();
        await r.read(3);
        rect.screens = [];
        for (let s = 0; s < count; s++) {
          const b = await r.read(16);
          rect.screens.push({
            id: b.readUInt32BE(0),
            x: b.readUInt16BE(4),
            y: b.readUInt16BE(6),
            w: b.readUInt16BE(8),
            h: b.readUInt16BE(10),
            flags: b.readUInt32BE(12),
          });
        }
        if (rect.w !== this.width || rect.h !== this.height) this.resizeTo(rect.w, rect.h);
        continue;
      }
      if (rect.encoding === ENC.CURSOR) {
        // Pixels in the client's format, then a 1-bit mask with rows padded to bytes.
        rect.cursor = await r.read(rect.w * rect.h * (this.pf.bitsPerPixel / 8) + Math.ceil(rect.w / 8) * rect.h);
        continue;
      }
      if (rect.encoding === ENC.QEMU_LED_STATE) {
        await r.read(1);
        continue;
      }
      if (rect.encoding === ENC.DESKTOP_NAME) {
        this.name = (await r.read(await r.u32())).toString();
        continue;
      }
      if (rect.encoding === 1) {
        const src = await r.read(4);
        this.copyRect(src.readUInt16BE(0), src.readUInt16BE(2), rect);
        continue;
      }
      const payload = await this.readPayload(rect);
      await this.fb.apply(rect, rect.encoding, payload);
    }
    const after = r.received - r.available;
    this.push({ type: 'update', rects, bytes: after - before, at: performance.now() });
  }

  private copyRect(sx: number, sy: number, d: Rect): void {
    if (sx + d.w > this.width || sy + d.h > this.height || d.x + d.w > this.width || d.y + d.h > this.height)
      throw new Error('CopyRect outside the framebuffer');
    const tmp = this.fb.region({ x: sx, y: sy, w: d.w, h: d.h });
    for (let y = 0; y < d.h; y++) this.fb.fb.set(tmp.subarray(y * d.w, (y + 1) * d.w), (d.y + y) * this.width + d.x);
  }

  private resizeTo(w: number, h: number): void {
    this.width = w;
    this.height = h;
    this.fb = new Client(w, h, this.pf, this.decoders);
  }

  /** Reads one rectangle's payload (its length is only known by walking it). */
  private async readPayload(rect: RectInfo): Promise<Buffer> {
    const r = this.reader;
    const bpp = this.pf.bitsPerPixel / 8;
    const p = new Payload(r);
    switch (rect.encoding) {
      case ENC.RAW:
        return r.read(rect.w * rect.h * bpp);
      case ENC.ZRLE:
      case 6: {
        const len = await p.bytes(4);
        await p.bytes(len.readUInt32BE(0));
        return p.data;
      }
      case ENC.HEXTILE: {
        for (let ty = 0; ty < rect.h; ty += 16)
          for (let tx = 0; tx < rect.w; tx += 16) {
            const tw = Math.min(16, rect.w - tx);
            const th = Math.min(16, rect.h - ty);
            const m = await p.u8();
            if (m & 1) {
              await p.bytes(tw * th * bpp);
              continue;
            }
            if (m & 2) await p.bytes(bpp);
            if (m & 4) await p.bytes(bpp);
            if (m & 8) {
              const count = await p.u8();
              await p.bytes(count * (m & 16 ? bpp + 2 : 2));
            }
          }
        return p.data;
      }
      case ENC.TIGHT: {
        const tp = tpixelSize(this.pf);
        const control = await p.u8();
        const method = control >> 4;
        if (method === 8) {
          await p.bytes(tp);
          return p.data;
        }
        if (method === 9) {
          await p.bytes(await compactLen(p));
          return p.data;
        }
        if (method & 8) throw new Error(`tight: compression ${method.toString(2)}`);
        const filter = method & 4 ? await p.u8() : 0;
        let size: number;
        if (filter === 1) {
          const colours = (await p.u8()) + 1;
          await p.bytes(colours * tp);
          size = colours === 2 ? Math.ceil(rect.w / 8) * rect.h : rect.w * rect.h;
        } else size = rect.w * rect.h * tp;
        if (size < 12) await p.bytes(size);
        else await p.bytes(await compactLen(p));
        return p.data;
      }
      default:
        throw new Error(`unexpected encoding ${rect.encoding}`);
    }
  }

  /** Waits for a message matching `pred` received at index `from` or later (default: from now on). */
  waitFor<T extends ServerMessage>(pred: (m: ServerMessage) => m is T, timeoutMs: number, from?: number): Promise<T>;
  waitFor(pred: (m: ServerMessage) => boolean, timeoutMs: number, from?: number): Promise<ServerMessage>;
  waitFor(pred: (m: ServerMessage) => boolean, timeoutMs: number, from = this.messages.length): Promise<ServerMessage> {
    this.start();
    return new Promise((resolve, reject) => {
      let at = from;
      const check = (): void => {
        while (at < this.messages.length) {
          const m = this.messages[at++]!;
          if (pred(m)) return done(null, m);
        }
        if (this.error) return done(this.error);
        if (this.reader.closed) return done(new Error('connection closed while waiting'));
      };
      const timer = setTimeout(() => done(new Error(`no matching message within ${timeoutMs} ms`)), timeoutMs);
      const done = (e: Error | null, m?: ServerMessage): void => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (e) reject(e);
        else resolve(m!);
      };
      this.listeners.add(check);
      check();
    });
  }

  nextUpdate(timeoutMs = 2000, from?: number): Promise<Extract<ServerMessage, { type: 'update' }>> {
    return this.waitFor((m): m is Extract<ServerMessage, { type: 'update' }> => m.type === 'update', timeoutMs, from);
  }

  /** Requests a full picture and waits for the update answering it. */
  async fullUpdate(timeoutMs = 3000): Promise<Extract<ServerMessage, { type: 'update' }>> {
    const from = this.messages.length;
    this.request(false);
    return this.nextUpdate(timeoutMs, from);
  }

  /** Why the local framebuffer is not `frame` converted to the client's format, or null if it is. */
  mismatch(frame: Frame): string | null {
    if (frame.width !== this.width || frame.height !== this.height) return `size ${this.width}x${this.height}, want ${frame.width}x${frame.height}`;
    const want = expectedPixels(frame, { x: 0, y: 0, w: frame.width, h: frame.height }, this.pf);
    const got = this.fb.fb;
    for (let i = 0; i < want.length; i++)
      if (got[i] !== want[i]) return `pixel (${i % frame.width},${Math.floor(i / frame.width)}) is 0x${got[i]!.toString(16)}, want 0x${want[i]!.toString(16)}`;
    return null;
  }

  /** Keeps requesting incremental updates (unless `continuous`) until the picture is `frame`. */
  async converge(frame: Frame, timeoutMs = 3000, continuous = false): Promise<void> {
    this.start();
    const end = performance.now() + timeoutMs;
    for (;;) {
      if (this.mismatch(frame) === null) return;
      const left = end - performance.now();
      if (left <= 0) throw new Error(`picture did not converge: ${this.mismatch(frame)}`);
      const from = this.messages.length;
      if (!continuous) this.request(true);
      await this.nextUpdate(left, from).catch((e: Error) => {
        throw new Error(`${e.message}; picture: ${this.mismatch(frame)}`);
      });
    }
  }

  get closed(): Promise<void> {
    return this.closedP;
  }

  close(): void {
    this.sock.destroy();
    this.decoders.close();
  }
}

async function compactLen(p: Payload): Promise<number> {
  let len = await p.u8();
  if (len & 0x80) {
    const b2 = await p.u8();
    len = (len & 0x7f) | ((b2 & 0x7f) << 7);
    if (b2 & 0x80) len |= (await p.u8()) << 14;
  }
  return len;
}

function parsePf(b: Buffer, at: number): PixelFormat {
  return {
    bitsPerPixel: b[at] as 8 | 16 | 32,
    depth: b[at + 1]!,
    bigEndian: b[at + 2] !== 0,
    trueColour: b[at + 3] !== 0,
    redMax: b.readUInt16BE(at + 4),
    greenMax: b.readUInt16BE(at + 6),
    blueMax: b.readUInt16BE(at + 8),
    redShift: b[at + 10]!,
    greenShift: b[at + 11]!,
    blueShift: b[at + 12]!,
  };
}
