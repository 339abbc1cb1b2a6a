// MSI-X capability (id 0x11). The vector table and PBA live in a BAR; QEMU
// emulates the table itself (its accesses never reach us) but reads the PBA
// through us, so the device model serves both from this object.
import type { ConfigSpace } from '../pci-config.js';
import type { PciCapability } from './capability.js';

const CONTROL_ENABLE = 0x8000;
const CONTROL_MASKALL = 0x4000;
const ENTRY = 16;

export interface MsixLayout {
  vectors: number;
  bar: number;
  tableOffset: number;
  pbaOffset: number;
}

export class MsixCapability implements PciCapability {
  readonly id = 0x11;
  readonly size = 12;
  private config!: ConfigSpace;
  private offset = 0;
  /** Guest-visible vector table (address, data, vector control per entry). */
  readonly table: Uint8Array;
  readonly pba: Uint8Array;

  constructor(readonly layout: MsixLayout) {
    const { vectors, tableOffset, pbaOffset } = layout;
    if (vectors < 1 || vectors > 2048) throw new Error('MSI-X supports 1..2048 vectors');
    if (tableOffset % 8 || pbaOffset % 8) throw new Error('MSI-X table and PBA offsets must be 8-byte aligned');
    const tableEnd = tableOffset + vectors * ENTRY;
    const pbaEnd = pbaOffset + Math.ceil(vectors / 64) * 8;
    if (tableOffset < pbaEnd && pbaOffset < tableEnd) throw new Error('MSI-X table and PBA overlap');
    this.table = new Uint8Array(vectors * ENTRY);
    this.pba = new Uint8Array(Math.ceil(vectors / 64) * 8);
    this.resetTable();
  }

  get tableSize(): number {
    return this.table.length;
  }

  attach(config: ConfigSpace, offset: number): void {
    this.config = config;
    this.offset = offset;
    config.setU16(offset + 2, this.layout.vectors - 1);
    config.setU32(offset + 4, this.layout.tableOffset | this.layout.bar);
    config.setU32(offset + 8, this.layout.pbaOffset | this.layout.bar);
    config.setWritable(offset + 2, 2, CONTROL_ENABLE | CONTROL_MASKALL);
  }

  get enabled(): boolean {
    return (this.config.u16(this.offset + 2) & CONTROL_ENABLE) !== 0;
  }

  get functionMasked(): boolean {
    return (this.config.u16(this.offset + 2) & CONTROL_MASKALL) !== 0;
  }

  vectorMasked(v: number): boolean {
    return ((this.table[v * ENTRY + 12] as number) & 1) !== 0;
  }

  setPending(v: number, pending: boolean): void {
    const byte = v >> 3;
    const bit = 1 << (v & 7);
    this.pba[byte] = pending ? (this.pba[byte] as number) | bit : (this.pba[byte] as number) & ~bit;
  }

  /** Serves an access that falls into the table or PBA of `bar`; returns false if it does not. */
  access(offset: number, data: Uint8Array, write: boolean): boolean {
    const { tableOffset, pbaOffset } = this.layout;
    if (offset >= tableOffset && offset + data.length <= tableOffset + this.table.length) {
      const at = offset - tableOffset;
      if (write) this.table.set(data, at);
      else data.set(this.table.subarray(at, at + data.length));
      return true;
    }
    if (offset >= pbaOffset && offset + data.length <= pbaOffset + this.pba.length) {
      const at = offset - pbaOffset;
      if (!write) data.set(this.pba.subarray(at, at + data.length)); // PBA is read-only
      return true;
    }
    return false;
  }

  private resetTable(): void {
    this.table.fill(0);
    for (let v = 0; v < this.layout.vectors; v++) this.table[v * ENTRY + 12] = 1; // masked at power-on
    this.pba.fill(0);
  }

  reset(): void {
    this.resetTable();
  }
}
