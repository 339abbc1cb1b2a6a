// The base of every device: a PCI function served over vfio-user. It carries
// config space, regions, interrupts, guest memory and reset, so a concrete
// device only describes its identity and BARs and implements its registers.
import type { DeviceInfo, DmaMapRequest, IrqInfo, PeerServices, RegionInfo, SetIrqsRequest, VfioUserBackend } from '../vfio-user/backend.js';
import { VfioError } from '../vfio-user/backend.js';
import type { RegionCap } from '../vfio-user/codec.js';
import {
  DEVICE_FLAG_PCI,
  DEVICE_FLAG_RESET,
  Errno,
  PCI_NUM_IRQS,
  PCI_NUM_REGIONS,
  PciRegion,
  REGION_CAP_SPARSE_MMAP,
  REGION_CAP_TYPE,
  REGION_FLAG_MMAP,
  REGION_FLAG_READ,
  REGION_FLAG_WRITE,
} from '../vfio-user/constants.js';
import type { PciCapability } from './capabilities/capability.js';
import { MsiCapability } from './capabilities/msi.js';
import { MsixCapability, type MsixLayout } from './capabilities/msix.js';
import { GuestMemory, type GuestMemoryOptions } from './guest-memory.js';
import { IrqController } from './irqs.js';
import { type BarSpec, CONFIG_SIZE, Command, ConfigSpace, type PciIdentity } from './pci-config.js';
import { type RegionDefinition, regionAccess } from './regions.js';

export type BarDefinition = BarSpec & Omit<RegionDefinition, 'size'>;

/** A device-specific region (index ≥ 9), identified by a VFIO region type. */
export interface ExtraRegion extends RegionDefinition {
  type: number;
  subtype: number;
}

export interface PciDeviceSpec {
  identity: PciIdentity;
  bars: (BarDefinition | null)[];
  /** Interrupts: INTx follows the identity's interrupt pin; MSI vectors; MSI-X layout. */
  msi?: number;
  msix?: MsixLayout;
  capabilities?: PciCapability[];
  regions?: ExtraRegion[];
  guestMemory?: GuestMemoryOptions;
}

export abstract class PciDevice implements VfioUserBackend {
  readonly config: ConfigSpace;
  readonly irqs: IrqController;
  readonly memory: GuestMemory;
  readonly msi: MsiCapability | null;
  readonly msix: MsixCapability | null;
  private readonly bars: (BarDefinition | null)[];
  private readonly extra: ExtraRegion[];
  private peerServices: PeerServices | null = null;
  log: (message: string) => void = () => {};

  constructor(spec: PciDeviceSpec) {
    this.bars = [...spec.bars];
    while (this.bars.length < 6) this.bars.push(null);
    this.extra = spec.regions ?? [];
    this.config = new ConfigSpace(
      spec.identity,
      this.bars.map((b) => (b ? { kind: b.kind, size: b.size, prefetchable: b.prefetchable ?? false } : null)),
    );
    this.msi = spec.msi ? new MsiCapability(spec.msi) : null;
    this.msix = spec.msix ? new MsixCapability(spec.msix) : null;
    if (this.msix) {
      const bar = this.bars[this.msix.layout.bar];
      if (!bar) throw new Error(`MSI-X lives in BAR${this.msix.layout.bar}, which does not exist`);
      const end = Math.max(this.msix.layout.tableOffset + this.msix.tableSize, this.msix.layout.pbaOffset + this.msix.pba.length);
      if (end > bar.size) throw new Error('MSI-X table or PBA extends beyond its BAR');
    }
    for (const cap of [this.msi, this.msix, ...(spec.capabilities ?? [])]) if (cap) this.config.addCapability(cap);
    this.irqs = new IrqController({
      intx: spec.identity.interruptPin !== 0,
      msi: spec.msi ?? 0,
      msix: spec.msix?.vectors ?? 0,
      err: true,
      req: true,
    });
    this.irqs.onIntxStatus = (a) => this.config.setInterruptStatus(a);
    if (this.msix) {
      const msix = this.msix;
      // No msixMasked hook: QEMU emulates the MSI-X table and function mask itself (table writes
      // never reach us), so our power-on-masked copy would swallow every vector. Masks come by SET_IRQS.
      this.irqs.msixPending = (v, p) => msix.setPending(v, p);
    }
    this.config.listener = {
      commandChanged: (_old, cmd) => {
        this.irqs.intxDisabled = (cmd & Command.INTX_DISABLE) !== 0;
        this.irqs.updateIntx();
      },
    };
    this.memory = new GuestMemory({ ...spec.guestMemory, log: (m) => this.log(m) });
  }

  // ---------------------------------------------------------------- for device authors

  /** Device power-on state (called at construction by subclasses and on every reset). */
  protected abstract resetDevice(): void;

  /** Raises (true) or lowers (false) the device's interrupt through whatever the guest enabled. */
  protected interrupt(level: boolean, vector = 0): void {
    this.irqs.request(level, vector);
  }

  /** True when the guest allowed the device to master the bus (DMA). */
  get busMaster(): boolean {
    return (this.config.command & Command.MASTER) !== 0;
  }

  get peer(): PeerServices | null {
    return this.peerServices;
  }

  /** Hooks for subclasses. */
  protected onAttach(): void {}
  protected onDetach(_reason: string | null): void {}

  /** Releases host resources (shared memory, sockets) when the device is destroyed. */
  dispose(): void {
    this.memory.clear();
    this.irqs.releaseAll();
  }

  // ---------------------------------------------------------------- VfioUserBackend

  attach(peer: PeerServices): void {
    this.peerServices = peer;
    this.memory.attach(peer);
    this.onAttach();
  }

  detach(reason: string | null): void {
    this.memory.clear();
    this.irqs.releaseAll();
    this.peerServices = null;
    this.onDetach(reason);
  }

  deviceInfo(): DeviceInfo {
    return { flags: DEVICE_FLAG_PCI | DEVICE_FLAG_RESET, numRegions: PCI_NUM_REGIONS + this.extra.length, numIrqs: PCI_NUM_IRQS };
  }

  private region(index: number): { def: RegionDefinition; name: string } | null {
    if (index >= 0 && index <= 5) {
      const b = this.bars[index];
      return b ? { def: b, name: `BAR${index}` } : null;
    }
    if (index >= PCI_NUM_REGIONS) {
      const r = this.extra[index - PCI_NUM_REGIONS];
      return r ? { def: r, name: `region ${index}` } : null;
    }
    return null;
  }

  regionInfo(index: number): RegionInfo {
    if (!Number.isInteger(index) || index < 0 || index >= PCI_NUM_REGIONS + this.extra.length) {
      throw new VfioError(Errno.EINVAL, `region index ${index} out of range`);
    }
    if (index === PciRegion.CONFIG) return { flags: REGION_FLAG_READ | REGION_FLAG_WRITE, size: CONFIG_SIZE, offset: 0, caps: [], fd: null };
    const r = this.region(index);
    if (!r) return { flags: 0, size: 0, offset: 0, caps: [], fd: null }; // absent BAR, ROM, VGA
    const { def } = r;
    let flags = 0;
    if (def.readable !== false) flags |= REGION_FLAG_READ;
    if (def.writable !== false) flags |= REGION_FLAG_WRITE;
    const caps: RegionCap[] = [];
    let fd: number | null = null;
    let offset = 0;
    if (def.backing) {
      flags |= REGION_FLAG_MMAP;
      fd = def.backing.memory.fd;
      offset = def.backing.offset;
      if (def.backing.areas) caps.push({ id: REGION_CAP_SPARSE_MMAP, areas: def.backing.areas });
    }
    if (index >= PCI_NUM_REGIONS) {
      const x = def as ExtraRegion;
      caps.push({ id: REGION_CAP_TYPE, type: x.type, subtype: x.subtype });
    }
    return { flags, size: def.size, offset, caps, fd };
  }

  regionRead(index: number, offset: number, out: Uint8Array): void {
    this.access(index, offset, out, false);
  }

  regionWrite(index: number, offset: number, data: Uint8Array): void {
    this.access(index, offset, data, true);
  }

  private access(index: number, offset: number, data: Uint8Array, write: boolean): void {
    if (index === PciRegion.CONFIG) {
      if (write) this.config.write(offset, data);
      else this.config.read(offset, data);
      return;
    }
    const r = this.region(index);
    if (!r) throw new VfioError(Errno.EINVAL, `region ${index} does not exist`);
    if (this.msix && index === this.msix.layout.bar && offset + data.length <= r.def.size && this.msix.access(offset, data, write)) return;
    regionAccess(r.def, r.name, offset, data, write);
  }

  irqInfo(index: number): IrqInfo {
    return this.irqs.info(index);
  }

  setIrqs(req: SetIrqsRequest): void {
    this.irqs.set(req);
  }

  dmaMap(req: DmaMapRequest): void {
    this.memory.map(req);
  }

  dmaUnmap(flags: number, address: number, size: number): void {
    this.memory.unmap(flags, address, size);
  }

  reset(): void {
    this.config.reset();
    this.irqs.reset();
    this.resetDevice();
  }
}
