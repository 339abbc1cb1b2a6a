// A vfio-user byte stream over a UNIX socket: framing, fd association and a
// write queue. It knows messages only as a header plus payload; what they mean
// is the session's business (session.ts, client.ts).
import * as native from '../native/index.js';
import { type Header, newHeader, readHeader } from './codec.js';
import { HEADER_SIZE } from './constants.js';

export interface ConnectionHandlers {
  /**
   * One complete message. `payload` is a view into the receive buffer, valid only
   * during the call; `fds` are owned by the handler from now on (it must close them).
   */
  onMessage(h: Header, payload: Uint8Array, fds: number[]): void;
  /**
   * Optional hot path, tried first for messages without fds: the message sits in `rx` at
   * `at` (header included, `size` bytes, readable through `view`). Returning true consumes it;
   * no per-message view is allocated.
   */
  onFastMessage?(h: Header, view: DataView, rx: Uint8Array, at: number, size: number): boolean;
  /** A message whose declared size exceeds the limit: its body is discarded. */
  onOversized(h: Header): void;
  /** The connection is gone; `reason` is null for an orderly close by the peer. */
  onClose(reason: string | null): void;
}

export interface ConnectionOptions {
  /** Largest message (header included) accepted; larger ones are skipped. */
  maxMessageSize: number;
}

const NO_FDS: number[] = [];
const INITIAL_RX = 64 * 1024;

interface FdChunk {
  start: number; // absolute stream offset of the read that carried the fds
  end: number;
  fds: number[];
}

export class Connection {
  readonly fd: number;
  private rx = new Uint8Array(INITIAL_RX);
  private view = new DataView(this.rx.buffer);
  private readonly st = new Int32Array(4 + 64);
  private readonly watch: native.WatchHandle;
  private readonly header = newHeader();
  /** Absolute stream offset of rx[0]. */
  private base = 0;
  private fdChunks: FdChunk[] = [];
  private skip = 0; // bytes of an oversized message still to discard
  private txQueue: { data: Uint8Array; fds: number[] | null }[] = [];
  private closed = false;
  private inDispatch = false;
  bytesIn = 0;
  bytesOut = 0;

  constructor(
    fd: number,
    private readonly handlers: ConnectionHandlers,
    private readonly options: ConnectionOptions,
  ) {
    this.fd = fd;
    this.watch = native.watch(
      fd,
      this.rx,
      this.st,
      (n) => this.onData(n),
      () => this.flush(),
    );
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends `len` bytes of `buf` (copied if they cannot go out at once) with optional fds. */
  send(buf: Uint8Array, len: number, fds: number[] | null = null): void {
    if (this.closed) return;
    if (this.txQueue.length === 0) {
      const n = native.send(this.fd, buf, 0, len, fds);
      if (n === len) {
        this.bytesOut += n;
        return;
      }
      if (n < 0 && n !== -native.EAGAIN && n !== -native.EINTR) {
        this.close(`send failed: errno ${-n}`);
        return;
      }
      const sent = Math.max(n, 0);
      this.bytesOut += sent;
      // fds went out with the first byte if anything was sent.
      this.txQueue.push({ data: buf.slice(sent, len), fds: sent > 0 ? null : fds });
      native.watchWritable(this.watch, true);
      return;
    }
    this.txQueue.push({ data: buf.slice(0, len), fds });
  }

  private flush(): void {
    while (this.txQueue.length > 0 && !this.closed) {
      const item = this.txQueue[0] as { data: Uint8Array; fds: number[] | null };
      const n = native.send(this.fd, item.data, 0, item.data.length, item.fds);
      if (n === -native.EAGAIN || n === -native.EINTR) return;
      if (n < 0) {
        this.close(`send failed: errno ${-n}`);
        return;
      }
      this.bytesOut += n;
      if (n < item.data.length) {
        item.data = item.data.subarray(n);
        item.fds = null;
        return;
      }
      this.txQueue.shift();
    }
    if (!this.closed) native.watchWritable(this.watch, false);
  }

  /** Bytes waiting in the write queue (back-pressure indicator). */
  get pendingBytes(): number {
    let n = 0;
    for (const q of this.txQueue) n += q.data.length;
    return n;
  }

  private onData(n: number): void {
    if (this.closed) return;
    const nfds = this.st[0] as number;
    let fds: number[] | null = null;
    if (nfds > 0) {
      fds = [];
      for (let i = 0; i < nfds; i++) fds.push(this.st[4 + i] as number);
    }
    if ((this.st[1] as number) & native.MSG_CTRUNC) {
      if (fds) for (const f of fds) native.close(f);
      this.close('ancillary data truncated (peer sent more fds than we accept)');
      return;
    }
    if (n === 0) {
      if (fds) for (const f of fds) native.close(f);
      const partial = (this.st[2] as number) > 0 || this.skip > 0;
      this.close(partial ? 'peer closed the connection in the middle of a message' : null);
      return;
    }
    if (n < 0) {
      if (fds) for (const f of fds) native.close(f);
      if (n === -native.ENOBUFS) this.close('receive buffer full');
      else this.close(`receive failed: errno ${-n}`);
      return;
    }
    const start = this.base + (this.st[2] as number);
    this.bytesIn += n;
    this.st[2] = (this.st[2] as number) + n;
    if (fds) this.fdChunks.push({ start, end: start + n, fds });
    this.parse();
  }

  private parse(): void {
    let at = 0;
    let end = this.st[2] as number;
    if (this.skip > 0) {
      const k = Math.min(this.skip, end);
      this.skip -= k;
      at = k;
      this.dropFdsBefore(this.base + at);
    }
    this.inDispatch = true;
    try {
      while (!this.closed && end - at >= HEADER_SIZE) {
        readHeader(this.view, at, this.header);
        const size = this.header.size;
        if (size < HEADER_SIZE) {
          this.close(`message size ${size} is smaller than the header`);
          return;
        }
        if (size > this.options.maxMessageSize) {
          this.handlers.onOversized(this.header);
          const have = end - at;
          const k = Math.min(size, have);
          this.skip = size - k;
          at += k;
          this.dropFdsBefore(this.base + at);
          continue;
        }
        if (end - at < size) {
          if (size > this.rx.length) this.grow(size);
          break;
        }
        const fds = this.claimFds(this.base + at, this.base + at + size);
        if (this.closed) return;
        if (fds.length > 0 || !this.handlers.onFastMessage?.(this.header, this.view, this.rx, at, size)) {
          this.handlers.onMessage(this.header, this.rx.subarray(at + HEADER_SIZE, at + size), fds);
        }
        at += size;
      }
    } finally {
      this.inDispatch = false;
    }
    if (this.closed) return;
    end = this.st[2] as number;
    if (at > 0) {
      this.rx.copyWithin(0, at, end);
      this.st[2] = end - at;
      this.base += at;
    }
  }

  /** fds of reads that covered [start, ..) belong to the last message starting in that read. */
  private claimFds(msgStart: number, msgEnd: number): number[] {
    if (this.fdChunks.length === 0) return NO_FDS;
    let out: number[] | null = null;
    while (this.fdChunks.length > 0) {
      const c = this.fdChunks[0] as FdChunk;
      if (c.end <= msgStart) {
        // No message header started inside that read: nobody can own its fds.
        for (const f of c.fds) native.close(f);
        this.fdChunks.shift();
        this.close('file descriptors arrived without a message to carry them');
        return NO_FDS;
      }
      if (c.start <= msgStart && c.end <= msgEnd) {
        out ??= [];
        for (const f of c.fds) out.push(f);
        this.fdChunks.shift();
        continue;
      }
      break;
    }
    return out ?? NO_FDS;
  }

  private dropFdsBefore(pos: number): void {
    while (this.fdChunks.length > 0 && (this.fdChunks[0] as FdChunk).end <= pos) {
      for (const f of (this.fdChunks.shift() as FdChunk).fds) native.close(f);
    }
  }

  private grow(size: number): void {
    let n = this.rx.length;
    while (n < size) n *= 2;
    const next = new Uint8Array(n);
    next.set(this.rx.subarray(0, this.st[2] as number));
    this.rx = next;
    this.view = new DataView(next.buffer);
    native.watchBuffer(this.watch, next);
  }

  /** Closes the socket and every fd still held by the stream; idempotent. */
  close(reason: string | null = 'closed locally'): void {
    if (this.closed) return;
    this.closed = true;
    native.watchClose(this.watch);
    native.close(this.fd);
    for (const c of this.fdChunks) for (const f of c.fds) native.close(f);
    this.fdChunks = [];
    this.txQueue = [];
    // Defer the callback if we are inside a dispatch so handlers see a consistent state.
    if (this.inDispatch) queueMicrotask(() => this.handlers.onClose(reason));
    else this.handlers.onClose(reason);
  }
}
