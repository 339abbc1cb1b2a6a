// One RFB viewer: handshake (3.3/3.7/3.8, None or VNC authentication), then
// the message loop. Updates are pushed as soon as the guest changes something
// (no fixed tick, no idle backoff), are built from damage the shared display
// tracked, and are withheld while the viewer's connection is backed up: frames
// are dropped for a slow viewer, never queued without bound.

import { arrowCursor, CURSOR_HEIGHT, CURSOR_WIDTH } from './cursor.js';
import { DamageMap } from './damage-map.js';
import { ENCODINGS } from './encoders/index.js';
import type { ScrollCopy } from './framebuffer.js';
import { encodePixelFormat, SERVER_FORMAT, validatePixelFormat } from './pixel-format.js';
import { type ClientMessage, ClientMsg, ProtocolError, parseClientMessage } from './receiver.js';
import type { EncodedRect, PixelFormat, Rect } from './types.js';
import { checkResponse, makeChallenge } from './vnc-auth.js';
import { finishRect, ZlibStreams } from './zlib-streams.js';

/** A byte stream to one viewer: a TCP socket or a WebSocket. */
export interface RfbTransport {
  write(data: Uint8Array): void;
  /** Bytes accepted but not yet sent (back-pressure). */
  readonly buffered: number;
  close(): void;
  onData(cb: (b: Buffer) => void): void;
  onClose(cb: () => void): void;
  onDrain(cb: () => void): void;
  readonly remote: string;
}

export type InputEvent = { kind: 'key'; down: boolean; keysym: number; keycode?: number } | { kind: 'pointer'; buttons: number; x: number; y: number };

/** What a session needs from the display it shows (one per instance, shared by its viewers). */
export interface RfbDisplayLink {
  readonly name: string;
  readonly width: number;
  readonly height: number;
  readonly generation: number;
  /** Encodes (or reuses the shared encoding of) a rect of the current frame. */
  encode(rect: Rect, pf: PixelFormat, encoding: number, level: number): EncodedRect[];
  input(e: InputEvent): void;
  /** Requested by a viewer: the display should announce this mode to the guest. */
  requestSize(width: number, height: number): boolean;
  detach(s: RfbSession): void;
  /** Refresh soon (a viewer wants a picture). */
  poke(): void;
  /** Refresh now unless that happened within the last few milliseconds. */
  refreshSoon(): void;
  /** Refresh synchronously and hand damage to the other viewers. */
  refreshNow(): void;
}

export interface SessionOptions {
  password: string | null;
  /** A second password that admits the viewer in view-only mode (like x11vnc's -viewpasswd). */
  viewPassword?: string | null;
  viewOnly: boolean;
  /** Withhold updates while this many bytes wait in the connection. */
  maxBuffered?: number;
  /** Drop a viewer that has not completed the handshake after this long (default 10 s). */
  handshakeTimeoutMs?: number;
  log?: (m: string) => void;
}

const SUPPORTED: number[] = [ENCODINGS.TIGHT, ENCODINGS.ZRLE, ENCODINGS.HEXTILE, ENCODINGS.RAW];
const FENCE_REQUEST = 0x80000000;
const FENCE_SUPPORTED = 0x7; // BlockBefore | BlockAfter | SyncNext
const HANDSHAKE_TIMEOUT_MS = 10_000;

type Phase = 'version' | 'security-choice' | 'auth' | 'init' | 'normal' | 'closed';

export class RfbSession {
  private phase: Phase = 'version';
  private minor = 8;
  private input: Buffer = Buffer.alloc(0);
  private skip = 0;
  private challenge: Uint8Array | null = null;
  private pf: PixelFormat = SERVER_FORMAT;
  private encoding: number = ENCODINGS.RAW;
  private level = 2;
  private caps = new Set<number>();
  private readonly streams = new ZlibStreams();
  private readonly damage = new DamageMap();
  private requested = false;
  /** Counts FramebufferUpdateRequests, to tell whether one arrived while an update was being built. */
  private requests = 0;
  private continuous = false;
  private cuArea: Rect = { x: 0, y: 0, w: 0, h: 0 };
  private sentEndOfCu = false;
  private resizePending = false;
  private sendingSize: { w: number; h: number } = { w: 0, h: 0 };
  private sending = false;
  /** A scroll to send as CopyRect ahead of the next update's pixels. */
  private pendingCopy: ScrollCopy | null = null;
  /** The cursor shape must be (re)sent: after SetEncodings asks for it or the pixel format changes. */
  private cursorPending = false;
  /** An ExtendedDesktopSize rect (reason 0, current layout) goes at the head of the next update. */
  private layoutPending = false;
  copyRectsSent = 0;
  private edsReply: { status: number } | null = null;
  private handshakeTimer: NodeJS.Timeout | null;
  updatesSent = 0;
  bytesSent = 0;
  framesDropped = 0;
  readonly connectedAt = Date.now();

  constructor(
    readonly transport: RfbTransport,
    private readonly display: RfbDisplayLink,
    private readonly options: SessionOptions,
  ) {
    transport.onData((b) => this.onData(b));
    transport.onClose(() => this.teardown());
    transport.onDrain(() => this.pump());
    transport.write(Buffer.from('RFB 003.008\n'));
    this.handshakeTimer = setTimeout(() => this.fail('handshake timed out'), options.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS);
    this.handshakeTimer.unref();
  }

  get active(): boolean {
    return this.phase === 'normal';
  }

  private viewOnlyByPassword = false;

  get viewOnly(): boolean {
    return this.options.viewOnly || this.viewOnlyByPassword;
  }

  get pixelFormat(): PixelFormat {
    return this.pf;
  }

  get preferredEncoding(): number {
    return this.encoding;
  }

  /** True while the viewer waits for pixels (a pending request or continuous mode). */
  get wantsUpdates(): boolean {
    return this.active && (this.requested || this.continuous);
  }

  private log(m: string): void {
    this.options.log?.(`${this.transport.remote}: ${m}`);
  }

  private fail(reason: string): void {
    if (this.phase === 'closed') return;
    this.log(`closing: ${reason}`);
    this.transport.close();
    this.teardown();
  }

  private teardown(): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
    this.streams.close();
    this.display.detach(this);
  }

  close(): void {
    this.fail('closed by server');
  }

  // ------------------------------------------------------------------ input

  private onData(b: Buffer): void {
    if (this.phase === 'closed') return;
    this.input = this.input.length ? Buffer.concat([this.input, b]) : b;
    let at = 0;
    try {
      while (at < this.input.length && (this.phase as Phase) !== 'closed') {
        if (this.skip > 0) {
          const k = Math.min(this.skip, this.input.length - at);
          this.skip -= k;
          at += k;
          continue;
        }
        const used = this.step(at);
        if (used === 0) break;
        at += used;
      }
    } catch (e) {
      this.fail(e instanceof ProtocolError ? e.message : `internal error: ${(e as Error).stack}`);
      return;
    }
    this.input = at >= this.input.length ? Buffer.alloc(0) : this.input.subarray(at);
    // A handshake never needs more than a few dozen bytes: refuse to buffer more.
    if (this.phase !== 'normal' && this.input.length > 256) this.fail('oversized handshake');
  }

  private step(at: number): number {
    const buf = this.input;
    const avail = buf.length - at;
    switch (this.phase) {
      case 'version': {
        if (avail < 12) return 0;
        const m = /^RFB (\d{3})\.(\d{3})\n$/.exec(buf.toString('latin1', at, at + 12));
        if (m?.[1] !== '003') throw new ProtocolError('not an RFB 3.x client');
        const minor = Number(m[2]);
        // 3.3 and 3.5 speak 3.3; 3.7; anything newer (3.8, Apple's 3.889) speaks 3.8.
        this.minor = minor >= 8 ? 8 : minor === 7 ? 7 : 3;
        const type = this.options.password ? 2 : 1;
        if (this.minor === 3) {
          const out = Buffer.alloc(4);
          out.writeUInt32BE(type);
          this.transport.write(out);
          this.afterSecurityChosen(type);
        } else {
          this.transport.write(Buffer.from([1, type]));
          this.phase = 'security-choice';
        }
        return 12;
      }
      case 'security-choice': {
        const chosen = buf[at] as number;
        const offered = this.options.password ? 2 : 1;
        if (chosen !== offered) {
          this.securityFailed(`security type ${chosen} was not offered`);
          return 1;
        }
        this.afterSecurityChosen(chosen);
        return 1;
      }
      case 'auth': {
        if (avail < 16) return 0;
        const response = buf.subarray(at, at + 16);
        const full = this.challenge !== null && checkResponse(this.options.password ?? '', this.challenge, response);
        const view = !full && this.challenge !== null && !!this.options.viewPassword && checkResponse(this.options.viewPassword, this.challenge, response);
        this.challenge = null;
        if (view) this.viewOnlyByPassword = true;
        if (!full && !view) {
          this.securityFailed('authentication failed');
          return 16;
        }
        this.transport.write(Buffer.from([0, 0, 0, 0]));
        this.phase = 'init';
        return 16;
      }
      case 'init':
        // Every viewer shares the display: an "exclusive" request never disconnects the others.
        this.sendServerInit();
        this.phase = 'normal';
        if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
        this.handshakeTimer = null;
        return 1;
      case 'normal': {
        const r = parseClientMessage(buf, at, buf.length);
        if (!r) return 0;
        this.handle(r.msg);
        if (r.msg.type === 'cut-text') this.skip = r.msg.length;
        return r.used;
      }
      default:
        return avail;
    }
  }

  private afterSecurityChosen(type: number): void {
    if (type === 2) {
      this.challenge = makeChallenge();
      this.transport.write(this.challenge);
      this.phase = 'auth';
      return;
    }
    // None: 3.8 still sends a SecurityResult.
    if (this.minor === 8) this.transport.write(Buffer.from([0, 0, 0, 0]));
    this.phase = 'init';
  }

  private securityFailed(reason: string): void {
    const out: Buffer[] = [Buffer.from([0, 0, 0, 1])];
    if (this.minor === 8) {
      const r = Buffer.from(reason);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(r.length);
      out.push(len, r);
    }
    this.transport.write(Buffer.concat(out));
    this.log(reason);
    // Read nothing more; close once the failure had time to leave (fail() is a no-op once closed).
    this.teardown();
    setTimeout(() => this.transport.close(), 50).unref();
  }

  private sendServerInit(): void {
    // Start from what the guest shows now, not from whenever the shadow was last refreshed.
    this.display.refreshNow();
    const name = Buffer.from(this.display.name);
    const out = Buffer.alloc(24 + name.length);
    this.sendingSize = { w: this.display.width, h: this.display.height };
    out.writeUInt16BE(this.sendingSize.w, 0);
    out.writeUInt16BE(this.sendingSize.h, 2);
    out.set(encodePixelFormat(SERVER_FORMAT), 4);
    out.writeUInt32BE(name.length, 20);
    out.set(name, 24);
    this.transport.write(out);
    this.resetDamage(true);
  }

  private handle(msg: ClientMessage): void {
    switch (msg.type) {
      case 'set-pixel-format': {
        const why = validatePixelFormat(msg.format);
        if (why) throw new ProtocolError(`unusable pixel format: ${why}`);
        this.pf = msg.format;
        this.cursorPending = this.caps.has(ENCODINGS.CURSOR);
        // Everything must be resent in the new format.
        this.resetDamage(true);
        return;
      }
      case 'set-encodings': {
        this.caps = new Set(msg.encodings);
        this.cursorPending = this.caps.has(ENCODINGS.CURSOR);
        this.encoding = msg.encodings.find((e) => SUPPORTED.includes(e)) ?? ENCODINGS.RAW;
        const lvl = msg.encodings.find((e) => e >= -256 && e <= -247);
        this.level = lvl === undefined ? 2 : lvl + 256;
        if (this.caps.has(ENCODINGS.CONTINUOUS_UPDATES) && !this.sentEndOfCu) {
          // Announce ContinuousUpdates support with an EndOfContinuousUpdates message.
          this.sentEndOfCu = true;
          this.transport.write(Buffer.from([150]));
        }
        return;
      }
      case 'update-request':
        this.requested = true;
        this.requests++;
        if (!msg.incremental) {
          // rfbproto: a non-incremental request is answered with the screen layout too, which is how
          // viewers learn that SetDesktopSize is possible.
          if (this.caps.has(ENCODINGS.EXTENDED_DESKTOP_SIZE)) this.layoutPending = true;
          this.markDirty({ x: msg.x, y: msg.y, w: msg.w, h: msg.h });
        }
        // Look at the guest first, so the answer is the current picture, not the last one found.
        this.display.refreshSoon();
        this.pump();
        return;
      case 'key':
      case 'qemu-key':
        if (this.viewOnly) return;
        this.display.input({ kind: 'key', down: msg.down, keysym: msg.keysym >>> 0, ...(msg.type === 'qemu-key' ? { keycode: msg.keycode } : {}) });
        return;
      case 'pointer': {
        if (this.viewOnly) return;
        // Coordinates outside the screen are clamped to its edge, never passed through.
        const x = Math.min(msg.x, Math.max(0, this.display.width - 1));
        const y = Math.min(msg.y, Math.max(0, this.display.height - 1));
        this.display.input({ kind: 'pointer', buttons: msg.buttons & 0xff, x, y });
        return;
      }
      case 'cut-text':
        return; // no guest clipboard peer yet; the text is skipped
      case 'continuous-updates':
        if (!this.caps.has(ENCODINGS.CONTINUOUS_UPDATES)) throw new ProtocolError('EnableContinuousUpdates without announcing support');
        if (msg.enable) {
          this.continuous = true;
          this.cuArea = { x: msg.x, y: msg.y, w: msg.w, h: msg.h };
          this.display.poke();
          this.pump();
        } else {
          this.continuous = false;
          this.transport.write(Buffer.from([150]));
        }
        return;
      case 'fence': {
        if (!(msg.flags & FENCE_REQUEST)) return; // a response to a fence we never sent: ignore
        const out = Buffer.alloc(9 + msg.payload.length);
        out[0] = 248;
        out.writeUInt32BE((msg.flags & FENCE_SUPPORTED) >>> 0, 4);
        out[8] = msg.payload.length;
        out.set(msg.payload, 9);
        this.transport.write(out);
        return;
      }
      case 'set-desktop-size': {
        const ok = !this.viewOnly && this.display.requestSize(msg.width, msg.height);
        // 4 = forwarded (the guest changes mode when it re-probes), 1 = prohibited.
        this.edsReply = { status: ok ? 4 : 1 };
        this.pump();
        return;
      }
    }
  }

  // ------------------------------------------------------------------ damage

  private resetDamage(all: boolean): void {
    this.damage.reset(this.display.width, this.display.height, all);
  }

  /** The display changed size: the viewer learns the new size first, then gets every pixel. */
  resized(): void {
    if (!this.active) return;
    // The geometry may be back to what this viewer already has (e.g. a new plane of the same size).
    if (this.display.width !== this.sendingSize.w || this.display.height !== this.sendingSize.h) this.resizePending = true;
    this.resetDamage(true);
    this.pump();
  }

  /**
   * The display scrolled. A viewer that holds exactly the pre-scroll picture gets a CopyRect;
   * any other viewer (lagging, or without CopyRect) gets the band as ordinary damage.
   */
  scrolled(c: ScrollCopy): void {
    if (!this.active) return;
    const inSync =
      // An update still being compressed is fine: its pixels were taken from the shadow before it
      // shifted, and the copy goes into the next update, after it.
      this.caps.has(ENCODINGS.COPY_RECT) &&
      !this.pendingCopy &&
      !this.resizePending &&
      !this.hasDirty() &&
      this.sendingSize.w === this.display.width &&
      this.sendingSize.h === this.display.height;
    if (inSync) this.pendingCopy = c;
    else this.markDirty({ x: 0, y: c.dstY, w: c.width, h: c.h });
  }

  markDirty(r: Rect): void {
    if (this.active) this.damage.mark(r);
  }

  private hasDirty(area?: Rect): boolean {
    return this.damage.any(area);
  }

  /** Dirty tiles this viewer can be sent now: all for a request, its area in continuous mode. */
  private hasSendable(): boolean {
    if (this.pendingCopy || (this.cursorPending && this.requested)) return true;
    return this.requested || this.cuArea.w === 0 ? this.hasDirty() : this.hasDirty(this.cuArea);
  }

  // ------------------------------------------------------------------ output

  /** Sends an update if the viewer asked for one, something changed, and the connection keeps up. */
  pump(): void {
    if (!this.active || this.sending) return;
    const wants = this.requested || this.continuous;
    if (!wants && !this.edsReply) return;
    if (this.transport.buffered > (this.options.maxBuffered ?? 4 << 20)) {
      if (this.hasDirty()) this.framesDropped++;
      return; // resumes on drain
    }
    const size = this.followsResize && (this.display.width !== this.sendingSize.w || this.display.height !== this.sendingSize.h);
    if (size) {
      this.resizePending = true;
      this.resetDamage(true);
    }
    if (this.resizePending || this.edsReply) {
      if (this.sendSizeUpdate()) return;
    }
    if (!wants || !this.hasSendable()) return;
    // A failure (e.g. the streams were closed because the viewer left mid-update) ends this session only.
    this.sendPixels().catch((e: Error) => this.fail(`update failed: ${e.message}`));
  }

  /** Whether the viewer can be told about a new desktop size. */
  private get followsResize(): boolean {
    return this.caps.has(ENCODINGS.EXTENDED_DESKTOP_SIZE) || this.caps.has(ENCODINGS.DESKTOP_SIZE);
  }

  private sendSizeUpdate(): boolean {
    const eds = this.caps.has(ENCODINGS.EXTENDED_DESKTOP_SIZE);
    const ds = this.caps.has(ENCODINGS.DESKTOP_SIZE);
    const w = this.display.width;
    const h = this.display.height;
    if (!eds && !ds) {
      // The viewer cannot follow a resize: keep sending what fits its old size.
      this.resizePending = false;
      this.edsReply = null;
      return false;
    }
    let reason = 0;
    let status = 0;
    if (this.edsReply && !this.resizePending) {
      reason = 1; // reply to this client's SetDesktopSize
      status = this.edsReply.status;
    }
    // An update holding the size rect alone.
    const rect = eds ? extendedDesktopSizeRect(reason, status, w, h) : desktopSizeRect(w, h);
    const out = Buffer.concat([Buffer.from([0, 0, 0, 1]), rect]);
    this.transport.write(out);
    this.bytesSent += out.length;
    this.sendingSize = { w, h };
    // A continuous-updates area was relative to the old size; the client re-sends it, until then cover all.
    if (this.continuous) this.cuArea = { x: 0, y: 0, w, h };
    this.resizePending = false;
    this.edsReply = null;
    // The size change answered the request; pixels follow with the next one (or at once when continuous).
    this.requested = false;
    if (this.continuous) queueMicrotask(() => this.pump());
    return true;
  }

  private async sendPixels(): Promise<void> {
    // Pixels are only ever encoded from a frame of the size this viewer was last told, unless it
    // cannot be told: then it gets the part of the frame that fits the size it has.
    const sizeKnown = this.display.width === this.sendingSize.w && this.display.height === this.sendingSize.h;
    if ((!sizeKnown && this.followsResize) || this.damage.width !== this.display.width || this.damage.height !== this.display.height) {
      this.resizePending = !sizeKnown && this.followsResize;
      this.resetDamage(true);
      if (this.resizePending) this.pump();
      return;
    }
    this.sending = true;
    const requests = this.requests;
    try {
      const gen = this.display.generation;
      let rects = this.damage.take();
      if (!sizeKnown) {
        const fits = { x: 0, y: 0, w: this.sendingSize.w, h: this.sendingSize.h };
        rects = rects.flatMap((r) => clip(r, fits) ?? []);
      }
      if (this.continuous && !this.requested && this.cuArea.w > 0) {
        // Continuous mode covers the client's area; damage outside it stays pending for later.
        const inside: Rect[] = [];
        for (const r of rects) {
          const c = clip(r, this.cuArea);
          if (c) inside.push(c);
          if (!c) this.markDirty(r);
          else if (c.w !== r.w || c.h !== r.h) for (const o of outside(r, c)) this.markDirty(o);
        }
        rects = inside;
      }
      const encoded: EncodedRect[] = [];
      for (const r of rects) for (const e of this.display.encode(r, this.pf, this.encoding, this.level)) encoded.push(e);
      const parts: Uint8Array[] = [];
      let count = 0;
      const copy = this.pendingCopy;
      this.pendingCopy = null;
      if (copy) {
        // CopyRect first: the client moves what it has, then paints what is really new.
        const c = Buffer.alloc(16);
        c.writeUInt16BE(0, 0);
        c.writeUInt16BE(copy.dstY, 2);
        c.writeUInt16BE(copy.width, 4);
        c.writeUInt16BE(copy.h, 6);
        c.writeInt32BE(ENCODINGS.COPY_RECT, 8);
        c.writeUInt16BE(0, 12);
        c.writeUInt16BE(copy.srcY, 14);
        parts.push(c);
        count++;
        this.copyRectsSent++;
      }
      if (this.layoutPending) {
        this.layoutPending = false;
        parts.push(extendedDesktopSizeRect(0, 0, this.sendingSize.w, this.sendingSize.h));
        count++;
      }
      if (this.cursorPending) {
        this.cursorPending = false;
        const head = Buffer.alloc(12);
        head.writeUInt16BE(0, 0); // hotspot x
        head.writeUInt16BE(0, 2); // hotspot y
        head.writeUInt16BE(CURSOR_WIDTH, 4);
        head.writeUInt16BE(CURSOR_HEIGHT, 6);
        head.writeInt32BE(ENCODINGS.CURSOR, 8);
        parts.push(head, arrowCursor(this.pf));
        count++;
      }
      for (const e of encoded) {
        const head = Buffer.alloc(12);
        head.writeUInt16BE(e.rect.x, 0);
        head.writeUInt16BE(e.rect.y, 2);
        head.writeUInt16BE(e.rect.w, 4);
        head.writeUInt16BE(e.rect.h, 6);
        head.writeInt32BE(e.encoding, 8);
        parts.push(head);
        for (const p of await finishRect(e, this.streams, this.level)) parts.push(p);
        count++;
      }
      if (this.phase !== 'normal') return;
      if (count === 0) return;
      const head = Buffer.alloc(4);
      head[0] = 0;
      if (this.caps.has(ENCODINGS.LAST_RECT)) {
        // Streamed form: an unknown count closed by a LastRect rect (no 65535-rect limit).
        head.writeUInt16BE(0xffff, 2);
        const last = Buffer.alloc(12);
        last.writeInt32BE(ENCODINGS.LAST_RECT, 8);
        parts.push(last);
      } else head.writeUInt16BE(count, 2);
      const msg = Buffer.concat([head, ...parts]);
      this.transport.write(msg);
      this.bytesSent += msg.length;
      this.updatesSent++;
      // Continuous mode has no requests to pace it: look for the next change as soon as this one is out.
      if (this.continuous) this.display.poke();
      // A request that came in while this update was being built (after its damage was taken) still wants an answer.
      if (this.requests === requests) this.requested = false;
      void gen;
    } finally {
      this.sending = false;
    }
    // Damage that arrived while we encoded goes out at once (continuous mode, or a request came in meanwhile) or with the next request.
    if ((this.continuous || this.requested) && this.hasSendable()) this.pump();
  }
}

/** A DesktopSize rect announcing a new framebuffer size. */
function desktopSizeRect(w: number, h: number): Buffer {
  const out = Buffer.alloc(12);
  out.writeUInt16BE(w, 4);
  out.writeUInt16BE(h, 6);
  out.writeInt32BE(ENCODINGS.DESKTOP_SIZE, 8);
  return out;
}

/** An ExtendedDesktopSize rect with one screen covering the whole framebuffer. */
function extendedDesktopSizeRect(reason: number, status: number, w: number, h: number): Buffer {
  const out = Buffer.alloc(12 + 4 + 16);
  out.writeUInt16BE(reason, 0);
  out.writeUInt16BE(status, 2);
  out.writeUInt16BE(w, 4);
  out.writeUInt16BE(h, 6);
  out.writeInt32BE(ENCODINGS.EXTENDED_DESKTOP_SIZE, 8);
  out[12] = 1; // one screen
  out.writeUInt16BE(w, 24);
  out.writeUInt16BE(h, 26);
  return out;
}

/** The parts of `r` outside its sub-rect `c` (up to four rects). */
function outside(r: Rect, c: Rect): Rect[] {
  const out: Rect[] = [];
  if (c.y > r.y) out.push({ x: r.x, y: r.y, w: r.w, h: c.y - r.y });
  if (c.y + c.h < r.y + r.h) out.push({ x: r.x, y: c.y + c.h, w: r.w, h: r.y + r.h - c.y - c.h });
  if (c.x > r.x) out.push({ x: r.x, y: c.y, w: c.x - r.x, h: c.h });
  if (c.x + c.w < r.x + r.w) out.push({ x: c.x + c.w, y: c.y, w: r.x + r.w - c.x - c.w, h: c.h });
  return out;
}

function clip(r: Rect, a: Rect): Rect | null {
  const x0 = Math.max(r.x, a.x);
  const y0 = Math.max(r.y, a.y);
  const x1 = Math.min(r.x + r.w, a.x + a.w);
  const y1 = Math.min(r.y + r.h, a.y + a.h);
  return x1 > x0 && y1 > y0 ? { x: x0, y: y0, w: x1 - x0, h: y1 - y0 } : null;
}

export { ClientMsg };
