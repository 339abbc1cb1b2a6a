// Server side of one vfio-user connection: negotiation, strict in-order request
// handling, replies that respect QEMU's reply-size ceilings, and our own
// DMA_READ/DMA_WRITE requests matched to their replies by message id.
import * as native from '../native/index.js';
import { type DmaMapRequest, type PeerServices, type SetIrqsRequest, VfioError, type VfioUserBackend } from './backend.js';
import {
  DECODE_OK,
  DECODE_SHORT,
  decodeFields,
  encodeFields,
  encodeRegionCaps,
  type Fields,
  type Header,
  isCommand,
  isError,
  isReply,
  parseVersionCapabilities,
  readU64,
  versionReplyJson,
  wantsReply,
  writeHeader,
  writeU64,
} from './codec.js';
import { Connection } from './connection.js';
import {
  Command,
  commandName,
  DEFAULT_MAX_DATA_XFER,
  Errno,
  FEATURE_GET,
  FEATURE_MASK,
  FEATURE_PROBE,
  FEATURE_SET,
  FLAG_ERROR,
  FLAG_NO_REPLY,
  HEADER_SIZE,
  IRQ_SET_ACTION_MASK_ALL,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_MASK,
  MsgType,
  OUR_MAX_MSG_FDS,
  REGION_FLAG_CAPS,
  REGION_FLAG_MMAP,
} from './constants.js';
import { DMA_LOGGING_RANGE, DMA_LOGGING_START, DMA_QEMU, type FdRule, type Layout, messageSpec, REGION_WRITE_MULTI_ENTRY } from './messages.js';

export type DmaLayout = 'qemu' | 'spec';

export interface SessionOptions {
  /** Largest REGION_READ/WRITE count we accept (stated in our VERSION reply). */
  maxDataXferSize?: number;
  /** fds we accept per message (stated in our VERSION reply, ≤ 16 for QEMU). */
  maxMsgFds?: number;
  /** Byte layout of DMA_READ/DMA_WRITE: QEMU's u32 count or the specification's u64. */
  dmaLayout?: DmaLayout;
  /** Accept REGION_WRITE_MULTI (advertised as write_multiple). */
  writeMultiple?: boolean;
  /** Timeout for our own DMA requests. */
  dmaTimeoutMs?: number;
  log?: (message: string) => void;
}

interface Pending {
  cmd: number;
  expect: number;
  resolve: (data: Uint8Array | null) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export interface SessionStats {
  requests: number;
  errors: number;
  perCommand: number[];
}

const REPLY = MsgType.REPLY;

export class ServerSession implements PeerServices {
  private readonly conn: Connection;
  private tx = new Uint8Array(64 * 1024);
  private txView = new DataView(this.tx.buffer);
  private readonly f: Fields = {};
  private negotiated = false;
  private peerMaxFds = 1;
  /** fds the client accepts per message (we only ever send one, on GET_REGION_INFO). */
  get peerMaxMsgFds(): number {
    return this.peerMaxFds;
  }
  private peerMaxXfer = DEFAULT_MAX_DATA_XFER;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly ourMaxXfer: number;
  private readonly ourMaxFds: number;
  private readonly dmaLayout: DmaLayout;
  private closeReason: string | null | undefined;
  readonly stats: SessionStats = { requests: 0, errors: 0, perCommand: new Array(19).fill(0) };
  readonly closed: Promise<string | null>;

  constructor(
    fd: number,
    private readonly backend: VfioUserBackend,
    private readonly options: SessionOptions = {},
  ) {
    this.ourMaxXfer = options.maxDataXferSize ?? DEFAULT_MAX_DATA_XFER;
    this.ourMaxFds = Math.min(options.maxMsgFds ?? OUR_MAX_MSG_FDS, 16);
    this.dmaLayout = options.dmaLayout ?? 'qemu';
    let resolveClosed!: (r: string | null) => void;
    this.closed = new Promise((r) => {
      resolveClosed = r;
    });
    this.conn = new Connection(
      fd,
      {
        onMessage: (h, p, fds) => this.onMessage(h, p, fds),
        onFastMessage: (h, v, rx, at, size) => this.onFast(h, v, rx, at, size),
        onOversized: (h) => this.onOversized(h),
        onClose: (reason) => {
          this.closeReason = reason;
          this.failPending(reason ?? 'peer closed the connection');
          if (this.negotiated) this.backend.detach(reason);
          resolveClosed(reason);
        },
      },
      { maxMessageSize: this.ourMaxXfer + 4096 },
    );
  }

  get maxDataXferSize(): number {
    return Math.min(this.peerMaxXfer, this.ourMaxXfer);
  }

  get isNegotiated(): boolean {
    return this.negotiated;
  }

  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  log(message: string): void {
    this.options.log?.(message);
  }

  close(reason = 'closed by server'): void {
    this.conn.close(reason);
  }

  // ------------------------------------------------------------ dispatch

  private onOversized(h: Header): void {
    this.log(`${commandName(h.cmd)} message of ${h.size} bytes exceeds our limit; discarded`);
    if (isCommand(h.flags) && wantsReply(h.flags)) this.sendError(h, Errno.E2BIG);
  }

  private onMessage(h: Header, p: Uint8Array, fds: number[]): void {
    if (isReply(h.flags)) {
      closeAll(fds);
      this.onReply(h, p);
      return;
    }
    if (!isCommand(h.flags)) {
      closeAll(fds);
      this.conn.close(`message type ${h.flags & 0xf} is neither command nor reply`);
      return;
    }
    this.stats.requests++;
    if (h.cmd < this.stats.perCommand.length) this.stats.perCommand[h.cmd] = (this.stats.perCommand[h.cmd] ?? 0) + 1;
    this.dispatching = true;
    try {
      const spec = messageSpec(h.cmd);
      if (!spec) throw new VfioError(Errno.ENOSYS, `unknown command ${h.cmd}`);
      checkFds(spec.requestFds, fds, this.ourMaxFds);
      if (!this.negotiated && h.cmd !== Command.VERSION) {
        throw new VfioError(Errno.EINVAL, `${spec.name} before VERSION negotiation`);
      }
      if (spec.from === 'server') throw new VfioError(Errno.EINVAL, `${spec.name} is a server-to-client command`);
      this.handle(h, p, fds);
    } catch (e) {
      closeAll(fds);
      this.stats.errors++;
      const errno = e instanceof VfioError ? e.errno : Errno.EIO;
      const what = e instanceof Error ? e.message : String(e);
      this.log(`${commandName(h.cmd)} (id ${h.id}) failed: ${what}`);
      if (!(e instanceof VfioError)) this.log(String((e as Error).stack ?? e));
      if (wantsReply(h.flags)) this.sendError(h, errno);
    } finally {
      this.dispatching = false;
      this.flushDeferred();
    }
  }

  /**
   * The hot path: trapped register reads and writes (QEMU's MMIO) are decoded straight from the
   * receive buffer and answered from the transmit buffer, with no allocation. Anything unusual
   * falls back to the general path, which validates and reports it.
   */
  private onFast(h: Header, v: DataView, rx: Uint8Array, at: number, size: number): boolean {
    if (!this.negotiated || !isCommand(h.flags)) return false;
    const cmd = h.cmd;
    if (cmd !== Command.REGION_READ && cmd !== Command.REGION_WRITE) return false;
    if (size < HEADER_SIZE + 16) return false;
    const p = at + HEADER_SIZE;
    const offset = readU64(v, p);
    const count = v.getUint32(p + 12, true);
    if (Number.isNaN(offset) || count === 0 || count > 8) return false;
    const region = v.getUint32(p + 8, true);
    const reply = wantsReply(h.flags);
    let data: Uint8Array;
    if (cmd === Command.REGION_READ) {
      if (size !== HEADER_SIZE + 16) return false;
      data = this.readViews[count] ?? (this.readViews[count] = this.tx.subarray(HEADER_SIZE + 16, HEADER_SIZE + 16 + count));
    } else {
      if (size !== HEADER_SIZE + 16 + count) return false;
      // Copied out (≤ 8 bytes) so the backend never sees the receive buffer.
      data = this.writeViews[count] ?? (this.writeViews[count] = this.writeScratch.subarray(0, count));
      for (let i = 0; i < count; i++) data[i] = rx[p + 16 + i] as number;
    }
    // DMA a register access starts must follow its reply (see `deferred`).
    this.dispatching = true;
    try {
      if (cmd === Command.REGION_READ) this.backend.regionRead(region, offset, data);
      else this.backend.regionWrite(region, offset, data);
    } catch {
      return false; // the general path repeats it and answers the error
    } finally {
      this.dispatching = false;
    }
    this.stats.requests++;
    this.stats.perCommand[cmd] = (this.stats.perCommand[cmd] ?? 0) + 1;
    if (reply) {
      const tv = this.txView;
      const len = cmd === Command.REGION_READ ? 16 + count : 16;
      writeHeader(tv, 0, h.id, cmd, HEADER_SIZE + len, REPLY);
      writeU64(tv, HEADER_SIZE, offset);
      tv.setUint32(HEADER_SIZE + 8, region, true);
      tv.setUint32(HEADER_SIZE + 12, count, true);
      this.conn.send(this.tx, HEADER_SIZE + len);
    }
    this.flushDeferred();
    return true;
  }

  /** Sends the DMA requests held back while a command was handled, now that its reply is out. */
  private flushDeferred(): void {
    if (this.deferred.length) for (const m of this.deferred.splice(0)) this.conn.send(m, m.length);
  }

  private readViews: (Uint8Array | undefined)[] = [];
  private readonly writeScratch = new Uint8Array(8);
  private readonly writeViews: (Uint8Array | undefined)[] = [];

  private decode(layout: Layout, p: Uint8Array, what: string): Fields {
    const r = decodeFields(layout, new DataView(p.buffer, p.byteOffset, p.byteLength), 0, p.length, this.f);
    if (r === DECODE_SHORT) throw new VfioError(Errno.EINVAL, `${what}: payload of ${p.length} bytes is shorter than ${layout.size}`);
    if (r !== DECODE_OK) throw new VfioError(Errno.EINVAL, `${what}: a 64-bit field is out of range`);
    return this.f;
  }

  private handle(h: Header, p: Uint8Array, fds: number[]): void {
    const spec = messageSpec(h.cmd);
    if (!spec) return;
    const req = spec.request;
    switch (h.cmd) {
      case Command.VERSION:
        return this.onVersion(h, p);
      case Command.DMA_MAP: {
        const f = this.decode(req, p, 'DMA_MAP');
        if (f.argsz !== 32) throw new VfioError(Errno.EINVAL, `DMA_MAP argsz ${f.argsz} != 32`);
        const m: DmaMapRequest = {
          flags: f.flags as number,
          offset: f.offset as number,
          address: f.address as number,
          size: f.size as number,
          fd: fds.length ? (fds[0] as number) : null,
        };
        this.backend.dmaMap(m);
        return this.replyEmpty(h);
      }
      case Command.DMA_UNMAP: {
        const f = this.decode(req, p, 'DMA_UNMAP');
        if (f.argsz < 24) throw new VfioError(Errno.EINVAL, `DMA_UNMAP argsz ${f.argsz} < 24`);
        this.backend.dmaUnmap(f.flags as number, f.address as number, f.size as number);
        if (!wantsReply(h.flags)) return;
        const at = this.begin(24);
        encodeFields(spec.reply, this.txView, at, { argsz: 24, flags: f.flags as number, address: f.address as number, size: f.size as number });
        return this.finish(h, 24);
      }
      case Command.DEVICE_GET_INFO: {
        const f = this.decode(req, p, 'DEVICE_GET_INFO');
        if (f.argsz < 16) throw new VfioError(Errno.EINVAL, `DEVICE_GET_INFO argsz ${f.argsz} < 16`);
        const info = this.backend.deviceInfo();
        if (!wantsReply(h.flags)) return;
        const at = this.begin(16);
        encodeFields(spec.reply, this.txView, at, { argsz: 16, flags: info.flags, num_regions: info.numRegions, num_irqs: info.numIrqs });
        return this.finish(h, 16);
      }
      case Command.DEVICE_GET_REGION_INFO:
        return this.onRegionInfo(h, p);
      case Command.DEVICE_GET_REGION_IO_FDS: {
        const f = this.decode(req, p, 'DEVICE_GET_REGION_IO_FDS');
        if (f.argsz < 16) throw new VfioError(Errno.EINVAL, `GET_REGION_IO_FDS argsz ${f.argsz} < 16`);
        this.backend.regionInfo(f.index as number); // validates the index
        if (!wantsReply(h.flags)) return;
        // We offer no ioeventfds: every region access comes through messages or mmap.
        const at = this.begin(16);
        encodeFields(spec.reply, this.txView, at, { argsz: 16, flags: 0, index: f.index as number, count: 0 });
        return this.finish(h, 16);
      }
      case Command.DEVICE_GET_IRQ_INFO: {
        const f = this.decode(req, p, 'DEVICE_GET_IRQ_INFO');
        if (f.argsz < 16) throw new VfioError(Errno.EINVAL, `GET_IRQ_INFO argsz ${f.argsz} < 16`);
        const index = f.index as number;
        const info = this.backend.irqInfo(index);
        if (!wantsReply(h.flags)) return;
        const at = this.begin(16);
        encodeFields(spec.reply, this.txView, at, { argsz: 16, flags: info.flags, index, count: info.count });
        return this.finish(h, 16);
      }
      case Command.DEVICE_SET_IRQS:
        return this.onSetIrqs(h, p, fds);
      case Command.REGION_READ: {
        const f = this.decode(req, p, 'REGION_READ');
        if (p.length !== req.size) throw new VfioError(Errno.EINVAL, `REGION_READ payload is ${p.length} bytes, expected ${req.size}`);
        const count = f.count as number;
        if (count === 0 || count > this.ourMaxXfer) throw new VfioError(Errno.EINVAL, `REGION_READ count ${count} outside 1..${this.ourMaxXfer}`);
        const offset = f.offset as number;
        const region = f.region as number;
        const at = this.begin(16 + count);
        this.backend.regionRead(region, offset, this.tx.subarray(at + 16, at + 16 + count));
        if (!wantsReply(h.flags)) return;
        encodeFields(spec.reply, this.txView, at, f);
        return this.finish(h, 16 + count);
      }
      case Command.REGION_WRITE: {
        const f = this.decode(req, p, 'REGION_WRITE');
        const count = f.count as number;
        if (count === 0 || count > this.ourMaxXfer) throw new VfioError(Errno.EINVAL, `REGION_WRITE count ${count} outside 1..${this.ourMaxXfer}`);
        if (p.length !== 16 + count) throw new VfioError(Errno.EINVAL, `REGION_WRITE carries ${p.length - 16} data bytes, count says ${count}`);
        this.backend.regionWrite(f.region as number, f.offset as number, p.subarray(16, 16 + count));
        if (!wantsReply(h.flags)) return;
        const at = this.begin(16);
        encodeFields(spec.reply, this.txView, at, f);
        return this.finish(h, 16);
      }
      case Command.DEVICE_RESET:
        if (p.length !== 0) throw new VfioError(Errno.EINVAL, 'DEVICE_RESET carries a payload');
        this.backend.reset();
        return this.replyEmpty(h);
      case Command.DIRTY_PAGES:
        throw new VfioError(Errno.ENOSYS, 'DIRTY_PAGES (migration v1) is retired');
      case Command.REGION_WRITE_MULTI:
        return this.onWriteMulti(h, p);
      case Command.DEVICE_FEATURE:
        return this.onFeature(h, p);
      case Command.MIG_DATA_READ: {
        const f = this.decode(req, p, 'MIG_DATA_READ');
        if (f.argsz < 8) throw new VfioError(Errno.EINVAL, `MIG_DATA_READ argsz ${f.argsz} < 8`);
        throw new VfioError(Errno.EINVAL, 'device is not in a migration state that produces data');
      }
      case Command.MIG_DATA_WRITE: {
        const f = this.decode(req, p, 'MIG_DATA_WRITE');
        if (p.length !== 8 + (f.size as number)) throw new VfioError(Errno.EINVAL, `MIG_DATA_WRITE size ${f.size} does not match ${p.length - 8} data bytes`);
        throw new VfioError(Errno.EINVAL, 'device is not in the RESUMING migration state');
      }
      default:
        throw new VfioError(Errno.ENOSYS, `unhandled command ${h.cmd}`);
    }
  }

  private onVersion(h: Header, p: Uint8Array): void {
    if (this.negotiated) throw new VfioError(Errno.EINVAL, 'VERSION already negotiated');
    const spec = messageSpec(Command.VERSION);
    if (!spec) return;
    const f = this.decode(spec.request, p, 'VERSION');
    if (f.major !== 0) throw new VfioError(Errno.ENOTSUP, `protocol major version ${f.major} is not supported (we speak 0)`);
    let caps: ReturnType<typeof parseVersionCapabilities>;
    try {
      caps = parseVersionCapabilities(p.subarray(4));
    } catch (e) {
      throw new VfioError(Errno.EINVAL, `VERSION: ${(e as Error).message}`);
    }
    if (caps.pgsizes % 4096 !== 0) throw new VfioError(Errno.EINVAL, `VERSION: pgsizes ${caps.pgsizes} lacks 4 KiB pages`);
    this.peerMaxFds = caps.maxMsgFds;
    this.peerMaxXfer = caps.maxDataXferSize;
    if (caps.unknownKeys.length) this.log(`VERSION: ignoring unknown capabilities ${caps.unknownKeys.join(', ')}`);
    const extra: Record<string, unknown> = {};
    if (this.options.writeMultiple && caps.writeMultiple) extra.write_multiple = true;
    const json = versionReplyJson(this.ourMaxFds, this.ourMaxXfer, extra);
    const at = this.begin(4 + json.length);
    encodeFields(spec.reply, this.txView, at, { major: 0, minor: 0 });
    this.tx.set(json, at + 4);
    this.negotiated = true;
    this.writeMultipleOn = extra.write_multiple === true;
    if (wantsReply(h.flags)) this.finish(h, 4 + json.length);
    this.backend.attach(this);
  }

  private writeMultipleOn = false;
  /** Set while a client command is handled: DMA it starts goes out after its reply (rule 13.1). */
  private dispatching = false;
  private deferred: Uint8Array[] = [];

  private onRegionInfo(h: Header, p: Uint8Array): void {
    const spec = messageSpec(Command.DEVICE_GET_REGION_INFO);
    if (!spec) return;
    const f = this.decode(spec.request, p, 'GET_REGION_INFO');
    const argsz = f.argsz as number;
    if (argsz < 32) throw new VfioError(Errno.EINVAL, `GET_REGION_INFO argsz ${argsz} < 32`);
    const index = f.index as number;
    const info = this.backend.regionInfo(index);
    if (!wantsReply(h.flags)) return;
    const caps = info.caps.length ? encodeRegionCaps(info.caps, 32) : null;
    const needed = 32 + (caps ? caps.length : 0);
    const fits = argsz >= needed;
    const flags = info.flags | (caps ? REGION_FLAG_CAPS : 0);
    const payload = fits ? needed : 32;
    const at = this.begin(payload);
    encodeFields(spec.reply, this.txView, at, {
      argsz: needed,
      flags,
      index,
      cap_offset: caps && fits ? 32 : 0,
      size: info.size,
      offset: info.offset,
    });
    if (caps && fits) this.tx.set(caps, at + 32);
    // Like libvfio-user, the fd goes out only with the complete reply so a retrying client gets it once.
    const fd = fits && info.fd !== null && info.flags & REGION_FLAG_MMAP ? info.fd : null;
    this.finish(h, payload, fd === null ? null : [fd]);
  }

  private onSetIrqs(h: Header, p: Uint8Array, fds: number[]): void {
    const spec = messageSpec(Command.DEVICE_SET_IRQS);
    if (!spec) return;
    const f = this.decode(spec.request, p, 'SET_IRQS');
    const flags = f.flags as number;
    const count = f.count as number;
    if ((f.argsz as number) < 20) throw new VfioError(Errno.EINVAL, `SET_IRQS argsz ${f.argsz} < 20`);
    const data = flags & IRQ_SET_DATA_MASK;
    const action = flags & IRQ_SET_ACTION_MASK_ALL;
    if (flags & ~(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK_ALL)) throw new VfioError(Errno.EINVAL, `SET_IRQS unknown flags 0x${flags.toString(16)}`);
    if (popcount(data) !== 1 || popcount(action) !== 1) {
      throw new VfioError(Errno.EINVAL, `SET_IRQS needs exactly one data type and one action (flags 0x${flags.toString(16)})`);
    }
    let bools: Uint8Array | null = null;
    if (data === IRQ_SET_DATA_BOOL) {
      if (p.length < 20 + count) throw new VfioError(Errno.EINVAL, `SET_IRQS DATA_BOOL carries ${p.length - 20} bytes for ${count} vectors`);
      bools = p.slice(20, 20 + count);
    }
    if (data === IRQ_SET_DATA_EVENTFD) {
      if (fds.length !== 0 && fds.length !== count) {
        throw new VfioError(Errno.EINVAL, `SET_IRQS DATA_EVENTFD with ${fds.length} fds for ${count} vectors`);
      }
    } else if (fds.length) {
      throw new VfioError(Errno.EINVAL, 'SET_IRQS carries fds without DATA_EVENTFD');
    }
    const req: SetIrqsRequest = { flags, index: f.index as number, start: f.start as number, count, bools, fds };
    this.backend.setIrqs(req);
    this.replyEmpty(h);
  }

  private onWriteMulti(h: Header, p: Uint8Array): void {
    const spec = messageSpec(Command.REGION_WRITE_MULTI);
    if (!spec) return;
    const f = this.decode(spec.request, p, 'REGION_WRITE_MULTI');
    const n = f.wr_cnt as number;
    const E = REGION_WRITE_MULTI_ENTRY.size;
    if (n === 0 || n > 1024 || p.length !== 8 + n * E) throw new VfioError(Errno.EINVAL, `REGION_WRITE_MULTI wr_cnt ${n} does not match ${p.length} bytes`);
    const v = new DataView(p.buffer, p.byteOffset, p.byteLength);
    const e: Fields = {};
    for (let i = 0; i < n; i++) {
      if (decodeFields(REGION_WRITE_MULTI_ENTRY, v, 8 + i * E, E, e) !== DECODE_OK || (e.count as number) === 0 || (e.count as number) > 8) {
        throw new VfioError(Errno.EINVAL, `REGION_WRITE_MULTI entry ${i} is invalid`);
      }
    }
    if (!this.writeMultipleOn) throw new VfioError(Errno.EINVAL, 'REGION_WRITE_MULTI without negotiated write_multiple');
    for (let i = 0; i < n; i++) {
      decodeFields(REGION_WRITE_MULTI_ENTRY, v, 8 + i * E, E, e);
      const dataAt = 8 + i * E + 16;
      this.backend.regionWrite(e.region as number, e.offset as number, p.subarray(dataAt, dataAt + (e.count as number)));
    }
    if (!wantsReply(h.flags)) return;
    const at = this.begin(8);
    encodeFields(spec.reply, this.txView, at, { wr_cnt: n });
    this.finish(h, 8);
  }

  private onFeature(h: Header, p: Uint8Array): void {
    const spec = messageSpec(Command.DEVICE_FEATURE);
    if (!spec) return;
    const f = this.decode(spec.request, p, 'DEVICE_FEATURE');
    const flags = f.flags as number;
    const feature = flags & FEATURE_MASK;
    const get = (flags & FEATURE_GET) !== 0;
    const set = (flags & FEATURE_SET) !== 0;
    const probe = (flags & FEATURE_PROBE) !== 0;
    if (flags & ~(FEATURE_MASK | FEATURE_GET | FEATURE_SET | FEATURE_PROBE)) throw new VfioError(Errno.EINVAL, 'DEVICE_FEATURE unknown flags');
    if ((get && set) || !(get || set || probe)) throw new VfioError(Errno.EINVAL, 'DEVICE_FEATURE needs exactly one of GET/SET (or PROBE)');
    const data = p.subarray(8);
    if (set && feature === 6) {
      // DMA_LOGGING_START: validate the range list before saying no.
      const v = new DataView(data.buffer, data.byteOffset, data.byteLength);
      const s: Fields = {};
      if (decodeFields(DMA_LOGGING_START, v, 0, data.length, s) !== DECODE_OK) throw new VfioError(Errno.EINVAL, 'DMA_LOGGING_START is truncated');
      if (data.length < DMA_LOGGING_START.size + (s.num_ranges as number) * DMA_LOGGING_RANGE.size)
        throw new VfioError(Errno.EINVAL, 'DMA_LOGGING_START ranges are truncated');
    }
    if (!this.backend.feature) throw new VfioError(Errno.ENOTSUP, `device feature ${feature} is not supported`);
    const out = this.backend.feature(feature, flags, data);
    if (!wantsReply(h.flags)) return;
    const extra = out ? out.length : 0;
    const at = this.begin(8 + extra);
    encodeFields(spec.reply, this.txView, at, { argsz: 8 + extra, flags });
    if (out) this.tx.set(out, at + 8);
    this.finish(h, 8 + extra);
  }

  // ------------------------------------------------------------ replies

  /** Reserves room for a payload of `len` bytes in the transmit buffer; returns its offset. */
  private begin(len: number): number {
    const total = HEADER_SIZE + len;
    if (total > this.tx.length) {
      let n = this.tx.length;
      while (n < total) n *= 2;
      this.tx = new Uint8Array(n);
      this.txView = new DataView(this.tx.buffer);
      this.readViews = [];
    }
    return HEADER_SIZE;
  }

  private finish(h: Header, len: number, fds: number[] | null = null): void {
    writeHeader(this.txView, 0, h.id, h.cmd, HEADER_SIZE + len, REPLY);
    this.conn.send(this.tx, HEADER_SIZE + len, fds);
  }

  private replyEmpty(h: Header): void {
    if (!wantsReply(h.flags)) return;
    writeHeader(this.txView, 0, h.id, h.cmd, HEADER_SIZE, REPLY);
    this.conn.send(this.tx, HEADER_SIZE);
  }

  private sendError(h: Header, errno: number): void {
    writeHeader(this.txView, 0, h.id, h.cmd, HEADER_SIZE, REPLY | FLAG_ERROR, errno);
    this.conn.send(this.tx, HEADER_SIZE);
  }

  // ------------------------------------------------------------ our DMA requests

  private onReply(h: Header, p: Uint8Array): void {
    const w = this.pending.get(h.id);
    if (!w || w.cmd !== h.cmd) {
      this.log(`unexpected reply id ${h.id} for ${commandName(h.cmd)}; ignored`);
      return;
    }
    this.pending.delete(h.id);
    clearTimeout(w.timer);
    if (isError(h.flags)) {
      w.reject(new VfioError(h.error || Errno.EIO, `${commandName(h.cmd)} failed in the client: errno ${h.error}`));
      return;
    }
    if (h.cmd === Command.DMA_WRITE) {
      w.resolve(null);
      return;
    }
    const dataAt = this.dmaLayout === 'qemu' ? 12 : 16;
    if (p.length < dataAt + w.expect) {
      w.reject(new VfioError(Errno.EPROTO, `DMA_READ reply carries ${p.length - dataAt} bytes, expected ${w.expect}`));
      return;
    }
    w.resolve(p.slice(dataAt, dataAt + w.expect));
  }

  private request(cmd: number, address: number, data: Uint8Array | null, count: number): Promise<Uint8Array | null> {
    if (this.isClosed) return Promise.reject(new VfioError(Errno.ECONNRESET, 'client is gone'));
    let id = this.nextId;
    while (this.pending.has(id)) id = (id + 1) & 0xffff;
    this.nextId = (id + 1) & 0xffff;
    // QEMU's struct {hdr, u64 address, u32 count, data} is padded to 32 bytes; data sits at 28.
    // Both layouts use a 16-byte fixed part (QEMU checks size >= its padded struct);
    // only where the data starts differs.
    const dataAt = this.dmaLayout === 'qemu' ? DMA_QEMU.size : 16;
    const len = data ? 16 + count : 16;
    const msg = new Uint8Array(HEADER_SIZE + len);
    const v = new DataView(msg.buffer);
    writeHeader(v, 0, id, cmd, msg.length, MsgType.COMMAND);
    writeU64(v, 16, address);
    v.setUint32(24, count, true); // u64 count in the spec layout, u32 in QEMU's: same bytes for count < 2^32
    if (data) msg.set(data.subarray(0, count), HEADER_SIZE + dataAt);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new VfioError(Errno.ETIMEDOUT, `${commandName(cmd)} at 0x${address.toString(16)} timed out`));
      }, this.options.dmaTimeoutMs ?? 5000);
      this.pending.set(id, { cmd, expect: count, resolve, reject, timer });
      if (this.dispatching) this.deferred.push(msg);
      else this.conn.send(msg, msg.length);
    });
  }

  async dmaRead(address: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    const chunk = this.maxDataXferSize;
    for (let done = 0; done < length; ) {
      const n = Math.min(chunk, length - done);
      const part = (await this.request(Command.DMA_READ, address + done, null, n)) as Uint8Array;
      out.set(part, done);
      done += n;
    }
    return out;
  }

  async dmaWrite(address: number, data: Uint8Array): Promise<void> {
    const chunk = this.maxDataXferSize;
    for (let done = 0; done < data.length; ) {
      const n = Math.min(chunk, data.length - done);
      await this.request(Command.DMA_WRITE, address + done, data.subarray(done, done + n), n);
      done += n;
    }
  }

  private failPending(reason: string): void {
    for (const w of this.pending.values()) {
      clearTimeout(w.timer);
      w.reject(new VfioError(Errno.ECONNRESET, reason));
    }
    this.pending.clear();
  }
}

function popcount(x: number): number {
  let n = 0;
  for (let v = x; v; v &= v - 1) n++;
  return n;
}

function closeAll(fds: number[]): void {
  for (const fd of fds) native.close(fd);
  fds.length = 0;
}

function checkFds(rule: FdRule, fds: number[], max: number): void {
  if (fds.length === 0) return;
  if (rule === 'none') throw new VfioError(Errno.EINVAL, `${fds.length} unexpected file descriptor(s)`);
  if (rule === 'optional-one' && fds.length > 1) throw new VfioError(Errno.EINVAL, `${fds.length} file descriptors where at most one belongs`);
  if (fds.length > max) throw new VfioError(Errno.EINVAL, `${fds.length} file descriptors exceed max_msg_fds ${max}`);
}

export { FLAG_NO_REPLY };
