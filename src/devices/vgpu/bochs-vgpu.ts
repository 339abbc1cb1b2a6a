// A virtual GPU that the stock Linux bochs DRM driver drives: QEMU's
// bochs-display contract (1234:1111, BAR0 = VRAM mapped straight into the
// guest, BAR2 = EDID, VGA ports, DISPI and QEMU extension registers). The
// plane is decoded from the registers on every query, so both page-flip
// generations (offset flips up to 6.12, offset-0 scanout from 6.13) work.

import { PciDevice } from '../../device/pci-device.js';
import type { AccessWidth, RegisterFile } from '../../device/regions.js';
import { SharedMemory } from '../../device/shared-memory.js';
import { bytesPerPixel, type DisplaySource, DrmFormat, emptyPlane, type Framebuffer, type PlaneInfo, PlaneType } from '../../display/plane.js';
import { generateEdid } from './edid.js';

export const DISPI = {
  ID: 0,
  XRES: 1,
  YRES: 2,
  BPP: 3,
  ENABLE: 4,
  BANK: 5,
  VIRT_WIDTH: 6,
  VIRT_HEIGHT: 7,
  X_OFFSET: 8,
  Y_OFFSET: 9,
  VIDEO_MEMORY_64K: 10,
} as const;
const DISPI_COUNT = 11;
const DISPI_ID = 0xb0c5;
const ENABLED = 0x01;

const MMIO_EDID = 0x000;
const MMIO_VGA = 0x400;
const MMIO_DISPI = 0x500;
const MMIO_EXT = 0x600;
const EXT_SIZE = 8;
export const BYTE_ORDER_LE = 0x1e1e1e1e;
export const BYTE_ORDER_BE = 0xbebebebe;

/** Largest mode the decoder accepts (the driver's own limit). */
const MAX_DIM = 8192;
const MIN_DIM = 64;

export interface BochsVgpuOptions {
  /** VRAM size: a power of two, at least 4 MiB. */
  vramBytes: number;
  /** Preferred mode announced in the EDID. */
  width: number;
  height: number;
  /** Largest mode announced in the EDID. */
  maxWidth: number;
  maxHeight: number;
  serial?: number;
}

/** BAR2: the registers, kept apart from the device so they can be built before it. */
class BochsRegisters implements RegisterFile {
  readonly dispi = new Uint16Array(DISPI_COUNT);
  byteOrder = BYTE_ORDER_LE;
  readonly vga = new Uint8Array(0x20);
  edid = new Uint8Array(0);
  /** Attribute-controller "display enabled" bit (palette address source). */
  blanked = true;
  private attrFlipFlop = false;
  onChange: () => void = () => {};

  constructor(private readonly vramBytes: number) {
    this.reset();
  }

  reset(): void {
    this.dispi.fill(0);
    this.dispi[DISPI.ID] = DISPI_ID;
    this.dispi[DISPI.VIDEO_MEMORY_64K] = this.vramBytes / 65536;
    this.byteOrder = BYTE_ORDER_LE;
    this.vga.fill(0);
    this.blanked = true;
    this.attrFlipFlop = false;
  }

  private readByte(off: number): number {
    if (off < MMIO_VGA) return (this.edid[off - MMIO_EDID] as number | undefined) ?? 0;
    if (off < MMIO_VGA + 0x20) {
      const port = off - MMIO_VGA;
      if (port === 0x1a) {
        this.attrFlipFlop = false; // reading input status 1 resets the attribute flip-flop
        return 0;
      }
      return this.vga[port] as number;
    }
    if (off >= MMIO_DISPI && off < MMIO_DISPI + 0x100) {
      const index = (off - MMIO_DISPI) >> 1;
      let v: number;
      if (index >= DISPI_COUNT) v = 0xffff;
      else if (index === DISPI.ID) v = DISPI_ID;
      else if (index === DISPI.VIDEO_MEMORY_64K) v = this.vramBytes / 65536;
      else v = this.dispi[index] as number;
      return (off & 1 ? v >> 8 : v) & 0xff;
    }
    if (off >= MMIO_EXT && off < MMIO_EXT + EXT_SIZE) {
      const v = off < MMIO_EXT + 4 ? EXT_SIZE : this.byteOrder;
      return (v >>> (8 * (off & 3))) & 0xff;
    }
    return 0xff;
  }

  read(offset: number, width: AccessWidth): number {
    let v = 0;
    for (let i = width - 1; i >= 0; i--) v = v * 256 + this.readByte(offset + i);
    return v;
  }

  write(offset: number, width: AccessWidth, value: number): void {
    let changed = false;
    for (let i = 0; i < width; i++) {
      const off = offset + i;
      const b = (value >>> (8 * i)) & 0xff;
      if (off >= MMIO_VGA && off < MMIO_VGA + 0x20) {
        const port = off - MMIO_VGA;
        if (port === 0) {
          // 0x3c0 alternates index/data; the index's bit 5 unblanks the screen.
          if (!this.attrFlipFlop) {
            const blanked = (b & 0x20) === 0;
            if (blanked !== this.blanked) changed = true;
            this.blanked = blanked;
          }
          this.attrFlipFlop = !this.attrFlipFlop;
        }
        this.vga[port] = b;
      } else if (off >= MMIO_DISPI && off < MMIO_DISPI + 2 * DISPI_COUNT) {
        const index = (off - MMIO_DISPI) >> 1;
        // ID and the VRAM size are fixed; everything else is stored raw, as on bochs-display.
        if (index === DISPI.ID || index === DISPI.VIDEO_MEMORY_64K) continue;
        const old = this.dispi[index] as number;
        const v = off & 1 ? (old & 0x00ff) | (b << 8) : (old & 0xff00) | b;
        if (v !== old) changed = true;
        this.dispi[index] = v;
      } else if (off >= MMIO_EXT + 4 && off < MMIO_EXT + 8) {
        const shift = 8 * (off & 3);
        const v = ((this.byteOrder & ~(0xff << shift)) | (b << shift)) >>> 0;
        if (v !== this.byteOrder) changed = true;
        this.byteOrder = v;
      }
      // EDID, extension size and undecoded offsets are read-only.
    }
    if (changed) this.onChange();
  }
}

export class BochsVgpu extends PciDevice implements DisplaySource {
  readonly vram: SharedMemory;
  private readonly regs: BochsRegisters;
  private readonly planeIds = new Map<string, number>();
  private nextPlaneId = 1;
  private lastKey = '';
  private notifyScheduled = false;
  private readonly listeners = new Set<(p: PlaneInfo) => void>();
  /** Modes the guest programmed that could not be shown (did not fit, bad depth, …). */
  refusedModes = 0;
  readonly options: BochsVgpuOptions;

  constructor(options: BochsVgpuOptions) {
    const { vramBytes } = options;
    if (vramBytes < 4 << 20 || !Number.isInteger(Math.log2(vramBytes)) || vramBytes > 1 << 30) {
      throw new RangeError(`VRAM must be a power of two between 4 MiB and 1 GiB, not ${vramBytes}`);
    }
    const vram = SharedMemory.create('mediated-vram', vramBytes);
    const regs = new BochsRegisters(vramBytes);
    try {
      super({
        identity: { vendorId: 0x1234, deviceId: 0x1111, subsystemVendorId: 0x1af4, subsystemId: 0x1100, classCode: 0x038000, revision: 2, interruptPin: 0 },
        bars: [
          // VRAM is mapped straight into the guest: no message per store.
          { kind: 'mem32', size: vramBytes, prefetchable: true, backing: { memory: vram, offset: 0 } },
          null,
          { kind: 'mem32', size: 4096, registers: regs },
        ],
      });
    } catch (e) {
      vram.close();
      throw e;
    }
    this.vram = vram;
    this.regs = regs;
    this.options = { ...options };
    regs.onChange = () => this.scheduleNotify();
    this.setMonitor(options.width, options.height);
  }

  get framebuffer(): Framebuffer {
    return { fd: this.vram.fd, bytes: this.vram.bytes };
  }

  get blanked(): boolean {
    return this.regs.blanked;
  }

  /** Raw DISPI register values (for status and tests). */
  get dispi(): Readonly<Uint16Array> {
    return this.regs.dispi;
  }

  /** Announces a monitor with this preferred mode (the EDID the guest reads next time it probes). */
  setMonitor(width: number, height: number): void {
    const o = this.options;
    if (width > o.maxWidth || height > o.maxHeight) throw new RangeError(`${width}x${height} exceeds the maximum ${o.maxWidth}x${o.maxHeight}`);
    this.options.width = width;
    this.options.height = height;
    const blob = new Uint8Array(1024);
    blob.set(generateEdid({ width, height, maxWidth: o.maxWidth, maxHeight: o.maxHeight, serial: o.serial ?? 1 }));
    this.regs.edid = blob;
  }

  get edid(): Uint8Array {
    return this.regs.edid.subarray(0, 128);
  }

  protected resetDevice(): void {
    this.regs?.reset();
    this.scheduleNotify();
  }

  override dispose(): void {
    super.dispose();
    this.listeners.clear();
    this.vram.close();
  }

  /** The decode QEMU applies to bochs-display (§9 of our contract notes), plus 24-bpp RGB888. */
  queryPlane(type: number): PlaneInfo {
    const plane = emptyPlane(type);
    if (type !== PlaneType.PRIMARY) return plane; // no cursor plane on this device
    const r = this.regs.dispi;
    if (!((r[DISPI.ENABLE] as number) & ENABLED)) return plane;
    let format: number;
    switch (r[DISPI.BPP]) {
      case 32:
        format = this.regs.byteOrder === BYTE_ORDER_BE ? DrmFormat.BGRX8888 : DrmFormat.XRGB8888;
        break;
      case 24:
        format = DrmFormat.RGB888;
        break;
      case 16:
        format = DrmFormat.RGB565;
        break;
      default:
        return plane;
    }
    const bpp = bytesPerPixel(format);
    const width = r[DISPI.XRES] as number;
    const height = r[DISPI.YRES] as number;
    if (width < MIN_DIM || height < MIN_DIM || width > MAX_DIM || height > MAX_DIM) return plane;
    const stride = Math.max(r[DISPI.VIRT_WIDTH] as number, width) * bpp;
    const offset = (r[DISPI.X_OFFSET] as number) * bpp + (r[DISPI.Y_OFFSET] as number) * stride;
    const size = stride * height;
    // A mode that does not fit the VRAM is not shown, never read out of bounds.
    if (offset + size > this.vram.size) return plane;
    plane.drm_format = format;
    plane.width = width;
    plane.height = height;
    plane.stride = stride;
    plane.size = size;
    plane.offset = offset;
    plane.dmabuf_id = this.planeId(`${format}:${width}:${height}:${stride}:${offset}`);
    return plane;
  }

  private planeId(key: string): number {
    let id = this.planeIds.get(key);
    if (id === undefined) {
      // A guest cycling through offsets must not grow this map without bound.
      if (this.planeIds.size >= 1024) this.planeIds.delete(this.planeIds.keys().next().value as string);
      id = this.nextPlaneId++;
      this.planeIds.set(key, id);
    }
    return id;
  }

  onPlaneChange(listener: (plane: PlaneInfo) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Coalesces the register writes of one mode set or flip into a single event. */
  private scheduleNotify(): void {
    if (this.notifyScheduled || !this.listeners) return;
    this.notifyScheduled = true;
    setImmediate(() => {
      this.notifyScheduled = false;
      const p = this.queryPlane(PlaneType.PRIMARY);
      const key = `${p.drm_format}:${p.width}:${p.height}:${p.stride}:${p.offset}`;
      if (key === this.lastKey) return;
      if (!p.drm_format && (this.regs.dispi[DISPI.ENABLE] as number) & ENABLED) this.refusedModes++;
      this.lastKey = key;
      for (const l of this.listeners) l(p);
    });
  }
}
