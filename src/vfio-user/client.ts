// A vfio-user client in TypeScript: connect, negotiate, query the device, map
// memory with fds, access regions, set IRQs, and answer the server's DMA
// requests. Used by tests, benchmarks and tooling (QEMU is the production client).
import * as native from '../native/index.js';
import { VfioError } from './backend.js';
import {
  DECODE_OK,
  decodeFields,
  decodeRegionCaps,
  encodeFields,
  type Fields,
  type Header,
  isError,
  isReply,
  parseVersionCapabilities,
  type RegionCap,
  readU64,
  type VersionCapabilities,
  writeHeader,
} from './codec.js';
import { Connection } from './connection.js';
import { Command, commandName, Errno, FLAG_ERROR, FLAG_NO_REPLY, HEADER_SIZE, MsgType, REGION_FLAG_CAPS } from './constants.js';
import { messageSpec } from './messages.js';

export interface Reply {
  header: Header;
  payload: Uint8Array;
  fds: number[];
}

/** Guest memory as the client sees it, for serving the server's DMA_READ/DMA_WRITE. */
export interface ClientMemory {
  read(address: number, length: number): Uint8Array | null;
  write(address: number, data: Uint8Array): boolean;
}

export interface ClientOptions {
  maxMsgFds?: number;
  maxDataXferSize?: number;
  /** Extra capability JSON merged into our VERSION request. */
  capabilities?: Record<string, unknown>;
  timeoutMs?: number;
  memory?: ClientMemory;
  dmaLayout?: 'qemu' | 'spec';
}

export interface ClientRegionInfo {
  flags: number;
  size: number;
  offset: number;
  caps: RegionCap[];
  fd: number | null;
}

interface Waiter {
  cmd: number;
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class VfioUserClient {
  private conn!: Connection;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private closedReason: string | null | undefined;
  serverCaps!: VersionCapabilities;
  serverVersion = { major: 0, minor: 0 };
  private readonly f: Fields = {};

  private constructor(private readonly options: ClientOptions) {}

  static async connect(path: string, options: ClientOptions = {}): Promise<VfioUserClient> {
    const c = new VfioUserClient(options);
    const fd = native.connect(path);
    c.conn = new Connection(
      fd,
      {
        onMessage: (h, p, fds) => c.onMessage(h, p, fds),
        onOversized: () => {},
        onClose: (reason) => {
          c.closedReason = reason;
          for (const w of c.waiters.values()) {
            clearTimeout(w.timer);
            w.reject(new VfioError(Errno.ECONNRESET, `connection closed: ${reason ?? 'by server'}`));
          }
          c.waiters.clear();
        },
      },
      { maxMessageSize: (options.maxDataXferSize ?? 1 << 20) + 4096 },
    );
    await c.negotiate();
    return c;
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  private async negotiate(): Promise<void> {
    const caps = {
      capabilities: {
        max_msg_fds: this.options.maxMsgFds ?? 16,
        max_data_xfer_size: this.options.maxDataXferSize ?? 1 << 20,
        pgsizes: 4096,
        max_dma_maps: 65535,
        ...this.options.capabilities,
      },
    };
    const json = Buffer.from(`${JSON.stringify(caps)}\0`);
    const p = new Uint8Array(4 + json.length);
    p.set(json, 4); // major 0, minor 0
    const r = await this.request(Command.VERSION, p);
    const v = view(r.payload);
    this.serverVersion = { major: v.getUint16(0, true), minor: v.getUint16(2, true) };
    this.serverCaps = parseVersionCapabilities(r.payload.subarray(4));
  }

  /** Sends a raw command and resolves with its reply (rejects with VfioError on an error reply). */
  request(cmd: number, payload: Uint8Array, fds: number[] | null = null): Promise<Reply> {
    if (this.isClosed) return Promise.reject(new VfioError(Errno.ECONNRESET, 'connection closed'));
    const id = this.allocId();
    const msg = new Uint8Array(HEADER_SIZE + payload.length);
    writeHeader(view(msg), 0, id, cmd, msg.length, MsgType.COMMAND);
    msg.set(payload, HEADER_SIZE);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new VfioError(Errno.ETIMEDOUT, `${commandName(cmd)} timed out`));
      }, this.options.timeoutMs ?? 5000);
      this.waiters.set(id, { cmd, resolve, reject, timer });
      this.conn.send(msg, msg.length, fds);
    });
  }

  /** Sends a command flagged NO_REPLY (a posted write). */
  post(cmd: number, payload: Uint8Array, fds: number[] | null = null): void {
    const msg = new Uint8Array(HEADER_SIZE + payload.length);
    writeHeader(view(msg), 0, this.allocId(), cmd, msg.length, MsgType.COMMAND | FLAG_NO_REPLY);
    msg.set(payload, HEADER_SIZE);
    this.conn.send(msg, msg.length, fds);
  }

  /** Sends arbitrary bytes (for malformed-input tests). */
  sendRaw(bytes: Uint8Array, fds: number[] | null = null): void {
    this.conn.send(bytes, bytes.length, fds);
  }

  private allocId(): number {
    let id = this.nextId;
    while (this.waiters.has(id)) id = (id + 1) & 0xffff;
    this.nextId = (id + 1) & 0xffff;
    return id;
  }

  private encode(cmd: number, values: Fields, extra = 0): Uint8Array {
    const spec = messageSpec(cmd);
    if (!spec) throw new Error(`no layout for command ${cmd}`);
    const p = new Uint8Array(spec.request.size + extra);
    encodeFields(spec.request, view(p), 0, values);
    return p;
  }

  private decodeReply(cmd: number, p: Uint8Array): Fields {
    const spec = messageSpec(cmd);
    if (!spec || decodeFields(spec.reply, view(p), 0, p.length, this.f) !== DECODE_OK) {
      throw new VfioError(Errno.EPROTO, `malformed ${commandName(cmd)} reply`);
    }
    return { ...this.f };
  }

  async getDeviceInfo(): Promise<{ flags: number; numRegions: number; numIrqs: number }> {
    const r = await this.request(Command.DEVICE_GET_INFO, this.encode(Command.DEVICE_GET_INFO, { argsz: 16 }));
    if (r.payload.length !== 16) throw new VfioError(Errno.EPROTO, `GET_INFO reply payload is ${r.payload.length} bytes`);
    const f = this.decodeReply(Command.DEVICE_GET_INFO, r.payload);
    return { flags: f.flags as number, numRegions: f.num_regions as number, numIrqs: f.num_irqs as number };
  }

  /** Region info, retrying with a larger argsz when capabilities do not fit (as QEMU does). */
  async getRegionInfo(index: number): Promise<ClientRegionInfo> {
    let argsz = 32;
    for (let attempt = 0; attempt < 3; attempt++) {
      const r = await this.request(Command.DEVICE_GET_REGION_INFO, this.encode(Command.DEVICE_GET_REGION_INFO, { argsz, index }));
      const f = this.decodeReply(Command.DEVICE_GET_REGION_INFO, r.payload);
      const needed = f.argsz as number;
      if (needed > argsz) {
        for (const fd of r.fds) native.close(fd);
        argsz = needed;
        continue;
      }
      const caps = (f.flags as number) & REGION_FLAG_CAPS && f.cap_offset ? decodeRegionCaps(r.payload, f.cap_offset as number) : [];
      return { flags: f.flags as number, size: f.size as number, offset: f.offset as number, caps, fd: r.fds[0] ?? null };
    }
    throw new VfioError(Errno.EPROTO, 'region info argsz keeps growing');
  }

  async getIrqInfo(index: number): Promise<{ flags: number; count: number }> {
    const r = await this.request(Command.DEVICE_GET_IRQ_INFO, this.encode(Command.DEVICE_GET_IRQ_INFO, { argsz: 16, index }));
    const f = this.decodeReply(Command.DEVICE_GET_IRQ_INFO, r.payload);
    return { flags: f.flags as number, count: f.count as number };
  }

  async setIrqs(index: number, flags: number, start: number, count: number, fds: number[] | null = null, bools: Uint8Array | null = null): Promise<void> {
    const p = this.encode(Command.DEVICE_SET_IRQS, { argsz: 20 + (bools?.length ?? 0), flags, index, start, count }, bools?.length ?? 0);
    if (bools) p.set(bools, 20);
    await this.request(Command.DEVICE_SET_IRQS, p, fds);
  }

  async regionRead(index: number, offset: number, count: number): Promise<Uint8Array> {
    const r = await this.request(Command.REGION_READ, this.encode(Command.REGION_READ, { offset, region: index, count }));
    if (r.payload.length !== 16 + count) throw new VfioError(Errno.EPROTO, `REGION_READ reply carries ${r.payload.length - 16} bytes`);
    return r.payload.subarray(16);
  }

  async regionWrite(index: number, offset: number, data: Uint8Array): Promise<void> {
    const p = this.encode(Command.REGION_WRITE, { offset, region: index, count: data.length }, data.length);
    p.set(data, 16);
    await this.request(Command.REGION_WRITE, p);
  }

  /** A posted (NO_REPLY) region write, like QEMU's BAR writes. */
  regionWritePosted(index: number, offset: number, data: Uint8Array): void {
    const p = this.encode(Command.REGION_WRITE, { offset, region: index, count: data.length }, data.length);
    p.set(data, 16);
    this.post(Command.REGION_WRITE, p);
  }

  async dmaMap(address: number, size: number, flags: number, fd: number | null = null, offset = 0): Promise<void> {
    await this.request(Command.DMA_MAP, this.encode(Command.DMA_MAP, { argsz: 32, flags, offset, address, size }), fd === null ? null : [fd]);
  }

  async dmaUnmap(address: number, size: number, flags = 0): Promise<void> {
    await this.request(Command.DMA_UNMAP, this.encode(Command.DMA_UNMAP, { argsz: 24, flags, address, size }));
  }

  async reset(): Promise<void> {
    await this.request(Command.DEVICE_RESET, new Uint8Array(0));
  }

  close(): void {
    this.conn.close(null);
  }

  private onMessage(h: Header, p: Uint8Array, fds: number[]): void {
    if (isReply(h.flags)) {
      const w = this.waiters.get(h.id);
      if (!w || w.cmd !== h.cmd) {
        for (const fd of fds) native.close(fd);
        return;
      }
      this.waiters.delete(h.id);
      clearTimeout(w.timer);
      if (isError(h.flags)) {
        for (const fd of fds) native.close(fd);
        w.reject(new VfioError(h.error, `${commandName(h.cmd)} failed: errno ${h.error}`));
        return;
      }
      w.resolve({ header: { ...h }, payload: p.slice(), fds: [...fds] });
      return;
    }
    for (const fd of fds) native.close(fd);
    this.serveDma(h, p);
  }

  /** Answers the server's DMA_READ/DMA_WRITE in the configured layout. */
  private serveDma(h: Header, p: Uint8Array): void {
    const qemu = (this.options.dmaLayout ?? 'qemu') === 'qemu';
    const dataAt = qemu ? 12 : 16;
    const mem = this.options.memory;
    const fail = (errno: number) => {
      const e = new Uint8Array(HEADER_SIZE);
      writeHeader(view(e), 0, h.id, h.cmd, HEADER_SIZE, MsgType.REPLY | FLAG_ERROR, errno);
      this.conn.send(e, e.length);
    };
    if ((h.cmd !== Command.DMA_READ && h.cmd !== Command.DMA_WRITE) || p.length < 16 || !mem) return fail(Errno.ENOSYS);
    const v = view(p);
    const address = readU64(v, 0);
    if (Number.isNaN(address)) return fail(Errno.EFAULT);
    const count = v.getUint32(8, true);
    if (h.cmd === Command.DMA_READ) {
      const data = mem.read(address, count);
      if (!data) return fail(Errno.EFAULT);
      const r = new Uint8Array(HEADER_SIZE + 16 + count);
      writeHeader(view(r), 0, h.id, h.cmd, r.length, MsgType.REPLY);
      r.set(p.subarray(0, 12), HEADER_SIZE);
      r.set(data, HEADER_SIZE + dataAt);
      this.conn.send(r, r.length);
      return;
    }
    if (p.length < dataAt + count) return fail(Errno.E2BIG);
    if (!mem.write(address, p.slice(dataAt, dataAt + count))) return fail(Errno.EFAULT);
    const r = new Uint8Array(HEADER_SIZE);
    writeHeader(view(r), 0, h.id, h.cmd, HEADER_SIZE, MsgType.REPLY);
    this.conn.send(r, r.length);
  }
}

function view(u: Uint8Array): DataView {
  return new DataView(u.buffer, u.byteOffset, u.byteLength);
}
