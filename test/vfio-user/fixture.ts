// Shared fixture for the message-level tests: a small PCI test device, a server
// on a real UNIX socket in a temporary directory, and a raw peer that speaks
// bytes (for malformed input and for checking exact reply shapes).
// No tests here; imported by the *.test.ts files.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { iova } from '../../src/device/addresses.js';
import { PciDevice } from '../../src/device/pci-device.js';
import type { AccessWidth, RegisterFile } from '../../src/device/regions.js';
import { SharedMemory } from '../../src/device/shared-memory.js';
import * as native from '../../src/native/index.js';
import { type ClientOptions, VfioUserClient } from '../../src/vfio-user/client.js';
import { type Header, writeHeader } from '../../src/vfio-user/codec.js';
import { Connection } from '../../src/vfio-user/connection.js';
import { Command, FLAG_NO_REPLY, HEADER_SIZE, MsgType } from '../../src/vfio-user/constants.js';
import { type ServerOptions, VfioUserServer } from '../../src/vfio-user/server.js';

export const BAR0_SIZE = 4096;
export const BAR2_SIZE = 16384;
export const BAR4_SIZE = 8192;
/** BAR2's mappable areas (the rest of BAR2 is trapped). */
export const BAR2_AREAS = [
  { offset: 0, size: 4096 },
  { offset: 8192, size: 8192 },
];
export const REGION9_TYPE = 0x8000_1234;
export const REGION9_SUBTYPE = 7;
export const VENDOR = 0x1234;
export const DEVICE = 0x5678;
/** BAR0 register map of the test device. */
export const Reg = {
  ID: 0x000, // read-only 0xc0ffee01
  IRQ: 0x100, // write 1/0: raise/lower the interrupt (vector 0)
  IRQ_VECTOR: 0x104, // write n: pulse vector n
  DMA_ADDR_LO: 0x200,
  DMA_ADDR_HI: 0x204,
  DMA_LEN: 0x208,
  DMA_KICK: 0x20c, // write 1: read DMA_LEN bytes of guest memory into SCRATCH; 2: write SCRATCH to guest
  DMA_DONE: 0x210, // counts completed DMA kicks; DMA_STATUS at 0x214 = last errno (0 = ok)
  DMA_STATUS: 0x214,
  BUG: 0x300, // write: the handler throws a plain Error (a device bug)
  SCRATCH: 0x400, // 1 KiB of plain storage
} as const;
export const DEVICE_ID_VALUE = 0xc0ffee01;

/** A register access as the register file saw it (after the region layer split it). */
export interface Access {
  offset: number;
  width: AccessWidth;
  value: number;
  write: boolean;
}

/**
 * The test device: BAR0 = 4 KiB trapped registers, BAR2 = 16 KiB 64-bit
 * prefetchable BAR backed by shared memory with two sparse areas (gaps trapped),
 * BAR4 = MSI-X table at 0 and PBA at 4096, region 9 = a vendor-typed region.
 * INTA, 2 MSI vectors, 4 MSI-X vectors.
 */
export class TestDevice extends PciDevice {
  readonly shm: SharedMemory;
  readonly bar0: Uint8Array;
  readonly accesses: Access[];
  resets = 0;
  /** Errors of DMA started by DMA_KICK. */
  readonly dmaErrors: unknown[] = [];

  constructor(options: { guestMemory?: { pinLimit?: number } } = {}) {
    const shm = SharedMemory.create('test-bar2', BAR2_SIZE);
    const bar0 = new Uint8Array(BAR0_SIZE);
    const v = new DataView(bar0.buffer);
    const holder: { dev?: TestDevice } = {};
    const accesses: Access[] = [];
    const regs: RegisterFile = {
      read(offset, width) {
        const value = width === 4 ? v.getUint32(offset, true) : width === 2 ? v.getUint16(offset, true) : v.getUint8(offset);
        accesses.push({ offset, width, value, write: false });
        return value;
      },
      write(offset, width, value) {
        accesses.push({ offset, width, value, write: true });
        if (offset === Reg.ID) return; // read-only
        if (offset === Reg.BUG) throw new Error('device bug');
        if (width === 4) v.setUint32(offset, value, true);
        else if (width === 2) v.setUint16(offset, value, true);
        else v.setUint8(offset, value);
        holder.dev?.onRegister(offset, value);
      },
    };
    const gap: RegisterFile = {
      // Recognisable bytes in BAR2's trapped gap: 0xa0 + the 4 KiB page number, in every byte.
      read: (offset, width) => (0xa0 + (offset >> 12)) * (width === 4 ? 0x01010101 : width === 2 ? 0x0101 : 1),
      write: () => {},
    };
    const bar4: RegisterFile = { read: () => 0x5a, write: () => {} };
    const region9 = new Uint8Array(256);
    super({
      identity: {
        vendorId: VENDOR,
        deviceId: DEVICE,
        subsystemVendorId: 0x1af4,
        subsystemId: 0x1100,
        classCode: 0xff0000,
        revision: 3,
        interruptPin: 1,
      },
      bars: [
        { kind: 'mem32', size: BAR0_SIZE, registers: regs },
        null,
        {
          kind: 'mem64',
          size: BAR2_SIZE,
          prefetchable: true,
          registers: gap,
          backing: { memory: shm, offset: 0, areas: BAR2_AREAS.map((a) => ({ ...a })) },
        },
        null,
        { kind: 'mem32', size: BAR4_SIZE, registers: bar4 },
      ],
      msi: 2,
      msix: { vectors: 4, bar: 4, tableOffset: 0, pbaOffset: 4096 },
      regions: [
        {
          size: 256,
          type: REGION9_TYPE,
          subtype: REGION9_SUBTYPE,
          registers: {
            read: (o, w) => (w === 1 ? (region9[o] as number) : new DataView(region9.buffer).getUint32(o, true)),
            write: (o, _w, val) => {
              region9[o] = val & 0xff;
            },
          },
        },
      ],
      guestMemory: options.guestMemory,
    });
    holder.dev = this;
    this.shm = shm;
    this.bar0 = bar0;
    this.accesses = accesses;
    this.resetDevice();
  }

  protected resetDevice(): void {
    if (!this.bar0) return;
    this.resets++;
    this.bar0.fill(0);
    new DataView(this.bar0.buffer).setUint32(Reg.ID, DEVICE_ID_VALUE, true);
  }

  /** Test hook: the device's interrupt request line / vector. */
  raise(level: boolean, vector = 0): void {
    this.interrupt(level, vector);
  }

  private reg(offset: number): number {
    return new DataView(this.bar0.buffer).getUint32(offset, true);
  }

  private onRegister(offset: number, value: number): void {
    if (offset === Reg.IRQ) this.interrupt(value !== 0);
    else if (offset === Reg.IRQ_VECTOR) {
      this.interrupt(true, value);
      this.interrupt(false, value);
    } else if (offset === Reg.DMA_KICK && value !== 0) {
      // The DMA runs after the register write returns (the session answers the write first).
      void this.runDma(value);
    }
  }

  private async runDma(kind: number): Promise<void> {
    const address = iova(this.reg(Reg.DMA_ADDR_HI) * 0x1_0000_0000 + this.reg(Reg.DMA_ADDR_LO));
    const len = Math.min(this.reg(Reg.DMA_LEN), 1024);
    const scratch = this.bar0.subarray(Reg.SCRATCH, Reg.SCRATCH + len);
    const v = new DataView(this.bar0.buffer);
    try {
      if (kind === 1) await this.memory.read(address, scratch);
      else await this.memory.write(address, scratch.slice());
      v.setUint32(Reg.DMA_STATUS, 0, true);
    } catch (e) {
      this.dmaErrors.push(e);
      v.setUint32(Reg.DMA_STATUS, (e as { errno?: number }).errno ?? 5, true);
    }
    v.setUint32(Reg.DMA_DONE, this.reg(Reg.DMA_DONE) + 1, true);
  }

  override dispose(): void {
    super.dispose();
    this.shm.close();
  }
}

export interface Harness<D extends PciDevice = TestDevice> {
  dir: string;
  path: string;
  device: D;
  server: VfioUserServer;
  logs: string[];
  connect(options?: ClientOptions): Promise<VfioUserClient>;
  /** Waits until the server has no client attached (after a disconnect). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export async function startServer(options?: ServerOptions): Promise<Harness>;
export async function startServer<D extends PciDevice>(options: ServerOptions, device: D): Promise<Harness<D>>;
export async function startServer(options: ServerOptions = {}, device: PciDevice = new TestDevice()): Promise<Harness<PciDevice>> {
  const dir = mkdtempSync(join(tmpdir(), 'mediated-vfu-'));
  const path = join(dir, 'dev.sock');
  const logs: string[] = [];
  const server = new VfioUserServer(path, device, { log: (m) => logs.push(m), ...options });
  server.listen();
  const clients: VfioUserClient[] = [];
  return {
    dir,
    path,
    device,
    server,
    logs,
    async connect(o: ClientOptions = {}) {
      const c = await VfioUserClient.connect(path, o);
      clients.push(c);
      await until(() => server.session?.isNegotiated === true);
      return c;
    },
    async idle() {
      await until(() => server.session === null);
    },
    async close() {
      for (const c of clients) if (!c.isClosed) c.close();
      await server.close();
      device.dispose();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Polls `cond` on the event loop until it holds (or fails after `ms`). */
export async function until(cond: () => boolean, ms = 3000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface RawMessage {
  header: Header;
  payload: Uint8Array;
  fds: number[];
}

/**
 * A peer that sends exact bytes and records every message it receives, framed
 * by our Connection. Used where the typed client would hide the wire shape.
 */
export class RawPeer {
  readonly received: RawMessage[] = [];
  private readonly conn: Connection;
  private wake: (() => void) | null = null;
  closeReason: string | null | undefined;
  private nextId = 0x100;

  constructor(fd: number) {
    this.conn = new Connection(
      fd,
      {
        onMessage: (h, p, fds) => {
          this.received.push({ header: { ...h }, payload: p.slice(), fds: [...fds] });
          this.wake?.();
        },
        onOversized: () => {},
        onClose: (reason) => {
          this.closeReason = reason;
          this.wake?.();
        },
      },
      { maxMessageSize: (1 << 20) + 4096 },
    );
  }

  static connect(path: string): RawPeer {
    return new RawPeer(native.connect(path));
  }

  get isClosed(): boolean {
    return this.closeReason !== undefined;
  }

  sendBytes(bytes: Uint8Array, fds: number[] | null = null): void {
    this.conn.send(bytes, bytes.length, fds);
  }

  /** Builds and sends one message; returns its id. */
  send(cmd: number, payload: Uint8Array, options: { flags?: number; id?: number; fds?: number[] | null; error?: number } = {}): number {
    const id = options.id ?? this.nextId++ & 0xffff;
    const msg = new Uint8Array(HEADER_SIZE + payload.length);
    writeHeader(new DataView(msg.buffer), 0, id, cmd, msg.length, options.flags ?? MsgType.COMMAND, options.error ?? 0);
    msg.set(payload, HEADER_SIZE);
    this.sendBytes(msg, options.fds ?? null);
    return id;
  }

  post(cmd: number, payload: Uint8Array): number {
    return this.send(cmd, payload, { flags: MsgType.COMMAND | FLAG_NO_REPLY });
  }

  /** Next received message (in arrival order). */
  async next(ms = 3000): Promise<RawMessage> {
    const end = Date.now() + ms;
    while (this.received.length === 0) {
      if (this.isClosed) throw new Error(`connection closed: ${this.closeReason}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error('timed out waiting for a message');
      await new Promise<void>((r) => {
        const t = setTimeout(r, left);
        this.wake = () => {
          clearTimeout(t);
          r();
        };
      });
      this.wake = null;
    }
    return this.received.shift() as RawMessage;
  }

  /** Sends a command and returns the next message, which must be its reply. */
  async call(cmd: number, payload: Uint8Array, options: { fds?: number[] | null } = {}): Promise<RawMessage> {
    const id = this.send(cmd, payload, options);
    const r = await this.next();
    if (r.header.id !== id || r.header.cmd !== cmd) throw new Error(`reply id ${r.header.id} cmd ${r.header.cmd}, expected ${id}/${cmd}`);
    return r;
  }

  /** VERSION with the given JSON (NUL appended). */
  async negotiate(json = '{"capabilities":{"max_msg_fds":16,"max_data_xfer_size":1048576}}'): Promise<RawMessage> {
    return this.call(Command.VERSION, versionPayload(json));
  }

  /** Resolves when the peer saw the connection close. */
  async closed(ms = 3000): Promise<string | null> {
    await until(() => this.isClosed, ms, 'connection close');
    return this.closeReason as string | null;
  }

  close(): void {
    this.conn.close(null);
  }
}

export function versionPayload(json: string, major = 0, minor = 0, nul = true): Uint8Array {
  const text = Buffer.from(json);
  const p = new Uint8Array(4 + text.length + (nul ? 1 : 0));
  const v = new DataView(p.buffer);
  v.setUint16(0, major, true);
  v.setUint16(2, minor, true);
  p.set(text, 4);
  return p;
}

/** Little-endian payload builder: `le([v, 4], [w, 8], ...)`. */
export function le(...parts: [number, 2 | 4 | 8][]): Uint8Array {
  let n = 0;
  for (const [, s] of parts) n += s;
  const out = new Uint8Array(n);
  const v = new DataView(out.buffer);
  let at = 0;
  for (const [x, s] of parts) {
    if (s === 2) v.setUint16(at, x, true);
    else if (s === 4) v.setUint32(at, x >>> 0, true);
    else v.setBigUint64(at, BigInt(x), true);
    at += s;
  }
  return out;
}

export function u32(p: Uint8Array, at: number): number {
  return new DataView(p.buffer, p.byteOffset, p.byteLength).getUint32(at, true);
}

export function u16(p: Uint8Array, at: number): number {
  return new DataView(p.buffer, p.byteOffset, p.byteLength).getUint16(at, true);
}

export function u64(p: Uint8Array, at: number): number {
  return Number(new DataView(p.buffer, p.byteOffset, p.byteLength).getBigUint64(at, true));
}

/** A guest RAM stand-in on the client side for message-based DMA. */
export class BufferMemory {
  readonly bytes: Uint8Array;
  reads: { address: number; length: number }[] = [];
  writes: { address: number; length: number }[] = [];
  constructor(
    readonly base: number,
    size: number,
  ) {
    this.bytes = new Uint8Array(size);
  }
  read(address: number, length: number): Uint8Array | null {
    this.reads.push({ address, length });
    const at = address - this.base;
    if (at < 0 || at + length > this.bytes.length) return null;
    return this.bytes.slice(at, at + length);
  }
  write(address: number, data: Uint8Array): boolean {
    this.writes.push({ address, length: data.length });
    const at = address - this.base;
    if (at < 0 || at + data.length > this.bytes.length) return false;
    this.bytes.set(data, at);
    return true;
  }
}

export function pattern(n: number, seed = 1): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
