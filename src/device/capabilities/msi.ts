// MSI capability (id 0x05), 64-bit address, optional multiple vectors.
// QEMU keeps its own emulated copy and turns the guest's enable into SET_IRQS;
// we keep ours consistent so config reads and resets are faithful.
import type { ConfigSpace } from '../pci-config.js';
import type { PciCapability } from './capability.js';

const CONTROL_ENABLE = 0x1;
const CONTROL_64BIT = 0x80;

export class MsiCapability implements PciCapability {
  readonly id = 0x05;
  /** id, next, control, address lo, address hi, data, reserved. */
  readonly size = 14;
  private config!: ConfigSpace;
  private offset = 0;

  /** @param vectors 1, 2, 4, 8, 16 or 32 */
  constructor(readonly vectors = 1) {
    if (![1, 2, 4, 8, 16, 32].includes(vectors)) throw new Error(`MSI supports 1..32 vectors in powers of two, not ${vectors}`);
  }

  attach(config: ConfigSpace, offset: number): void {
    this.config = config;
    this.offset = offset;
    const mmc = Math.log2(this.vectors) << 1;
    config.setU16(offset + 2, CONTROL_64BIT | mmc);
    // enable + multiple-message-enable are writable; address dword aligned; data 16 bits.
    config.setWritable(offset + 2, 2, CONTROL_ENABLE | 0x70);
    config.setWritable(offset + 4, 4, 0xfffffffc);
    config.setWritable(offset + 8, 4, 0xffffffff);
    config.setWritable(offset + 12, 2, 0xffff);
  }

  get enabled(): boolean {
    return (this.config.u16(this.offset + 2) & CONTROL_ENABLE) !== 0;
  }

  /** Vectors the guest enabled (multiple message enable), at least 1. */
  get enabledVectors(): number {
    return 1 << ((this.config.u16(this.offset + 2) >> 4) & 7);
  }
}
