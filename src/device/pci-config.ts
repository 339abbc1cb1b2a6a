// PCI configuration space of a type-0 (endpoint) function: the standard header
// with BAR sizing, command/status semantics and a capability list. Devices
// describe their identity and BARs; this module owns every config byte.
import { VfioError } from '../vfio-user/backend.js';
import { Errno } from '../vfio-user/constants.js';
import type { PciCapability } from './capabilities/capability.js';

export const CONFIG_SIZE = 256;

export const Cfg = {
  VENDOR_ID: 0x00,
  DEVICE_ID: 0x02,
  COMMAND: 0x04,
  STATUS: 0x06,
  REVISION: 0x08,
  CLASS_PROG: 0x09,
  CACHE_LINE: 0x0c,
  LATENCY: 0x0d,
  HEADER_TYPE: 0x0e,
  BAR0: 0x10,
  SUBSYSTEM_VENDOR_ID: 0x2c,
  SUBSYSTEM_ID: 0x2e,
  ROM: 0x30,
  CAP_PTR: 0x34,
  INTERRUPT_LINE: 0x3c,
  INTERRUPT_PIN: 0x3d,
} as const;

export const Command = {
  IO: 0x1,
  MEMORY: 0x2,
  MASTER: 0x4,
  PARITY: 0x40,
  SERR: 0x100,
  INTX_DISABLE: 0x400,
} as const;

export const Status = {
  INTERRUPT: 0x08,
  CAP_LIST: 0x10,
  /** Error bits are write-1-to-clear. */
  W1C: 0xf900,
} as const;

export type BarKind = 'io' | 'mem32' | 'mem64';

export interface BarSpec {
  kind: BarKind;
  /** Power of two; ≥ 16 for memory BARs, ≥ 4 for I/O BARs. */
  size: number;
  prefetchable?: boolean;
}

export interface PciIdentity {
  vendorId: number;
  deviceId: number;
  subsystemVendorId: number;
  subsystemId: number;
  /** 24-bit class code: base class << 16 | subclass << 8 | prog-if. */
  classCode: number;
  revision: number;
  /** INTA = 1 … INTD = 4; 0 = no INTx pin. */
  interruptPin: number;
}

export interface ConfigListener {
  /** Called after any write that changed the command register. */
  commandChanged?(previous: number, current: number): void;
  /** Called after a BAR's programmed address changed. */
  barChanged?(bar: number, address: number): void;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && Number.isInteger(Math.log2(n));
}

export class ConfigSpace {
  readonly bytes = new Uint8Array(CONFIG_SIZE);
  private readonly view = new DataView(this.bytes.buffer);
  /** Bits the guest may change. */
  private readonly writable = new Uint8Array(CONFIG_SIZE);
  /** Bits cleared by writing 1. */
  private readonly w1c = new Uint8Array(CONFIG_SIZE);
  private readonly power = new Uint8Array(CONFIG_SIZE);
  readonly bars: (BarSpec | null)[];
  readonly romSize: number;
  private readonly caps: { offset: number; cap: PciCapability }[] = [];
  private nextCapOffset = 0x40;
  listener: ConfigListener = {};

  constructor(
    readonly identity: PciIdentity,
    bars: (BarSpec | null)[],
    romSize = 0,
  ) {
    if (bars.length > 6) throw new Error('a type-0 header has six BARs');
    this.bars = [...bars];
    while (this.bars.length < 6) this.bars.push(null);
    this.bars.forEach((b, i) => {
      if (!b) return;
      if (!isPowerOfTwo(b.size)) throw new Error(`BAR${i} size ${b.size} is not a power of two`);
      if (b.kind === 'io' && (b.size < 4 || b.size > 256)) throw new Error(`BAR${i}: I/O BARs are 4..256 bytes`);
      if (b.kind !== 'io' && b.size < 16) throw new Error(`BAR${i}: memory BARs are at least 16 bytes`);
      if (b.kind === 'mem32' && b.size > 2 ** 31) throw new Error(`BAR${i}: 32-bit BAR larger than 2 GiB`);
      if (b.kind === 'mem64') {
        if (i === 5 || this.bars[i + 1]) throw new Error(`BAR${i}: a 64-bit BAR needs the next slot free`);
      }
    });
    if (romSize && (!isPowerOfTwo(romSize) || romSize < 2048)) throw new Error('ROM size must be a power of two ≥ 2 KiB');
    this.romSize = romSize;
    this.initHeader();
  }

  private initHeader(): void {
    const id = this.identity;
    const v = this.view;
    v.setUint16(Cfg.VENDOR_ID, id.vendorId, true);
    v.setUint16(Cfg.DEVICE_ID, id.deviceId, true);
    this.bytes[Cfg.REVISION] = id.revision;
    this.bytes[Cfg.CLASS_PROG] = id.classCode & 0xff;
    this.bytes[Cfg.CLASS_PROG + 1] = (id.classCode >> 8) & 0xff;
    this.bytes[Cfg.CLASS_PROG + 2] = (id.classCode >> 16) & 0xff;
    this.bytes[Cfg.HEADER_TYPE] = 0;
    v.setUint16(Cfg.SUBSYSTEM_VENDOR_ID, id.subsystemVendorId, true);
    v.setUint16(Cfg.SUBSYSTEM_ID, id.subsystemId, true);
    this.bytes[Cfg.INTERRUPT_PIN] = id.interruptPin;

    let cmdMask = Command.PARITY | Command.SERR | Command.MASTER;
    if (this.bars.some((b) => b?.kind === 'io')) cmdMask |= Command.IO;
    if (this.bars.some((b) => b && b.kind !== 'io') || this.romSize) cmdMask |= Command.MEMORY;
    if (id.interruptPin) cmdMask |= Command.INTX_DISABLE;
    this.setMask(Cfg.COMMAND, 2, cmdMask);
    this.setW1c(Cfg.STATUS, 2, Status.W1C);
    this.writable[Cfg.CACHE_LINE] = 0xff;
    this.writable[Cfg.LATENCY] = 0xff;
    this.writable[Cfg.INTERRUPT_LINE] = 0xff;

    this.bars.forEach((b, i) => {
      const at = Cfg.BAR0 + 4 * i;
      if (!b) return;
      if (b.kind === 'io') {
        v.setUint32(at, 0x1, true);
        this.setMask(at, 4, ~(b.size - 1) & 0xfffffffc);
      } else {
        const type = (b.kind === 'mem64' ? 0x4 : 0) | (b.prefetchable ? 0x8 : 0);
        v.setUint32(at, type, true);
        this.setMask(at, 4, Number(BigInt.asUintN(32, ~BigInt(b.size - 1))) & 0xfffffff0);
        if (b.kind === 'mem64') {
          const hi = Number(BigInt.asUintN(32, ~BigInt(b.size - 1) >> 32n));
          this.setMask(at + 4, 4, hi);
        }
      }
    });
    if (this.romSize) this.setMask(Cfg.ROM, 4, (~(this.romSize - 1) & 0xfffff800) | 1);
    this.power.set(this.bytes);
  }

  private setMask(at: number, len: number, mask: number): void {
    for (let i = 0; i < len; i++) this.writable[at + i] = (mask >>> (8 * i)) & 0xff;
  }

  private setW1c(at: number, len: number, mask: number): void {
    for (let i = 0; i < len; i++) this.w1c[at + i] = (mask >>> (8 * i)) & 0xff;
  }

  /**
   * Adds a capability to the list. Capabilities are laid out from 0x40 upwards
   * in the order added, each dword aligned.
   */
  addCapability(cap: PciCapability): number {
    const offset = this.nextCapOffset;
    if (offset + cap.size > CONFIG_SIZE) throw new Error('capabilities overflow conventional config space');
    const prev = this.caps.at(-1);
    if (prev) this.bytes[prev.offset + 1] = offset;
    else this.bytes[Cfg.CAP_PTR] = offset;
    this.bytes[offset] = cap.id;
    this.bytes[offset + 1] = 0;
    cap.attach(this, offset);
    this.caps.push({ offset, cap });
    this.nextCapOffset = (offset + cap.size + 3) & ~3;
    this.view.setUint16(Cfg.STATUS, this.view.getUint16(Cfg.STATUS, true) | Status.CAP_LIST, true);
    this.power.set(this.bytes);
    return offset;
  }

  /** Used by capabilities to declare which of their bits the guest may write. */
  setWritable(at: number, len: number, mask: number): void {
    this.setMask(at, len, mask);
  }

  get command(): number {
    return this.view.getUint16(Cfg.COMMAND, true);
  }

  u16(at: number): number {
    return this.view.getUint16(at, true);
  }

  u32(at: number): number {
    return this.view.getUint32(at, true);
  }

  setU16(at: number, value: number): void {
    this.view.setUint16(at, value, true);
  }

  setU32(at: number, value: number): void {
    this.view.setUint32(at, value >>> 0, true);
  }

  /** Reflects the INTx line in the status register (read-only to the guest). */
  setInterruptStatus(asserted: boolean): void {
    const s = this.u16(Cfg.STATUS);
    this.setU16(Cfg.STATUS, asserted ? s | Status.INTERRUPT : s & ~Status.INTERRUPT);
  }

  /** Address the guest programmed into BAR `i` (0 when unprogrammed or sized). */
  barAddress(i: number): number {
    const b = this.bars[i];
    if (!b) return 0;
    const at = Cfg.BAR0 + 4 * i;
    // >>> 0: `&` yields a signed int32, which made addresses ≥ 2 GiB negative.
    const lo = (this.u32(at) & (b.kind === 'io' ? 0xfffffffc : 0xfffffff0)) >>> 0;
    const hi = b.kind === 'mem64' ? this.u32(at + 4) : 0;
    return hi * 0x1_0000_0000 + lo;
  }

  read(offset: number, out: Uint8Array): void {
    const end = offset + out.length;
    if (offset < 0 || end > CONFIG_SIZE) {
      // Extended config space does not exist on a conventional function: reads as zero.
      if (offset >= CONFIG_SIZE && end <= 4096) {
        out.fill(0);
        return;
      }
      throw new VfioError(Errno.EINVAL, `config read of ${out.length} bytes at 0x${offset.toString(16)} is out of range`);
    }
    for (const { offset: o, cap } of this.caps) {
      if (offset < o + cap.size && end > o) cap.beforeRead?.();
    }
    out.set(this.bytes.subarray(offset, end));
  }

  write(offset: number, data: Uint8Array): void {
    const end = offset + data.length;
    if (offset < 0 || end > CONFIG_SIZE) {
      if (offset >= CONFIG_SIZE && end <= 4096) return; // ignored, like absent extended space
      throw new VfioError(Errno.EINVAL, `config write of ${data.length} bytes at 0x${offset.toString(16)} is out of range`);
    }
    const oldCommand = this.command;
    const oldBars = [0, 1, 2, 3, 4, 5].map((i) => this.barAddress(i));
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const val = data[i] as number;
      const w = this.writable[at] as number;
      const c = this.w1c[at] as number;
      let b = this.bytes[at] as number;
      b = (b & ~w) | (val & w);
      b &= ~(val & c);
      this.bytes[at] = b;
    }
    for (const { offset: o, cap } of this.caps) {
      if (offset < o + cap.size && end > o) cap.afterWrite?.(offset - o, data.length);
    }
    const cmd = this.command;
    if (cmd !== oldCommand) this.listener.commandChanged?.(oldCommand, cmd);
    for (let i = 0; i < 6; i++) {
      const a = this.barAddress(i);
      if (a !== oldBars[i]) this.listener.barChanged?.(i, a);
    }
  }

  /** Power-on state: header and capabilities as first built. */
  reset(): void {
    this.bytes.set(this.power);
    for (const { cap } of this.caps) cap.reset?.();
  }
}
