// One PCI capability in the config-space list. Each capability lives in its own
// file (msi.ts, msix.ts, …) and owns its bytes after the two-byte header.
import type { ConfigSpace } from '../pci-config.js';

export interface PciCapability {
  /** Capability id (0x05 MSI, 0x11 MSI-X, 0x01 power management, …). */
  readonly id: number;
  /** Bytes including the id/next header. */
  readonly size: number;
  /** Called once when placed; the capability writes its initial bytes and writable masks. */
  attach(config: ConfigSpace, offset: number): void;
  /** Called after the guest wrote bytes inside the capability (`at` relative to its start). */
  afterWrite?(at: number, length: number): void;
  beforeRead?(): void;
  reset?(): void;
}
