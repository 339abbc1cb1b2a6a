// Guest memory as the device sees it: the userspace analogue of VFIO's type1
// IOMMU for an emulated device. The client maps ranges (DMA_MAP); ranges with
// an fd are mapped here zero-copy on first use, ranges without one are reached
// through DMA_READ/DMA_WRITE messages. Devices pin ranges to hold direct views;
// on unmap every pin in the range is revoked before the unmap completes.
import * as native from '../native/index.js';
import type { DmaMapRequest, PeerServices } from '../vfio-user/backend.js';
import { VfioError } from '../vfio-user/backend.js';
import { DMA_FLAG_READ, DMA_FLAG_WRITE, DMA_UNMAP_FLAG_ALL, DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, Errno } from '../vfio-user/constants.js';
import { type Iova, PAGE_SIZE, pageAligned } from './addresses.js';

/** Views larger than this are split into windows (Node's 4 GiB ArrayBuffer limit). */
const WINDOW = 2 ** 30;
const MAX_ADDRESS = 2 ** 52; // x86-64 physical address width

export interface DmaRange {
  readonly address: number;
  readonly size: number;
  readonly flags: number;
  readonly fd: number | null;
  readonly offset: number;
  /** Lazily created mappings, one per WINDOW-sized window. */
  windows: (ArrayBuffer | null)[];
  pins: Set<Pin>;
  /** Set on unmap: a transfer that awaited a DMA message may still hold this range. */
  unmapped: boolean;
}

/** A segment of a translated IOVA range. */
export interface Segment {
  range: DmaRange;
  /** Offset within the range. */
  offset: number;
  length: number;
}

/** Direct access to a pinned guest range; `revoked` fires if the client unmaps it. */
export class Pin {
  released = false;
  constructor(
    readonly address: Iova,
    readonly length: number,
    readonly writable: boolean,
    /** Views into guest memory, in address order (one per contiguous host mapping). */
    readonly views: Uint8Array[],
    private readonly owner: GuestMemory,
    readonly onRevoke: (() => void) | null,
  ) {}
  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner.unpin(this);
  }
}

export interface GuestMemoryOptions {
  /** Bytes that may be pinned at once (the RLIMIT_MEMLOCK analogue). */
  pinLimit?: number;
  maxMappings?: number;
  log?: (m: string) => void;
}

export class GuestMemory {
  private ranges: DmaRange[] = []; // sorted by address, non-overlapping
  private pinnedBytes = 0;
  private peer: PeerServices | null = null;
  readonly pinLimit: number;
  readonly maxMappings: number;

  constructor(options: GuestMemoryOptions = {}) {
    this.pinLimit = options.pinLimit ?? 512 * 1024 * 1024;
    this.maxMappings = options.maxMappings ?? 65535;
  }

  get mappings(): readonly DmaRange[] {
    return this.ranges;
  }

  get pinned(): number {
    return this.pinnedBytes;
  }

  attach(peer: PeerServices): void {
    this.peer = peer;
  }

  map(req: DmaMapRequest): void {
    const { address, size, flags, fd, offset } = req;
    if (flags & ~(DMA_FLAG_READ | DMA_FLAG_WRITE)) throw new VfioError(Errno.EINVAL, `DMA_MAP unknown flags 0x${flags.toString(16)}`);
    if (!(flags & (DMA_FLAG_READ | DMA_FLAG_WRITE))) throw new VfioError(Errno.EINVAL, 'DMA_MAP without READ or WRITE');
    if (size === 0 || !pageAligned(address) || !pageAligned(size)) {
      throw new VfioError(Errno.EINVAL, `DMA_MAP [0x${address.toString(16)}, +0x${size.toString(16)}) is empty or not page aligned`);
    }
    if (address + size > MAX_ADDRESS) throw new VfioError(Errno.EINVAL, 'DMA_MAP beyond the guest address width');
    if (this.ranges.length >= this.maxMappings) throw new VfioError(Errno.ENOSPC, `more than ${this.maxMappings} DMA mappings`);
    const i = this.insertionPoint(address);
    const prev = this.ranges[i - 1];
    const next = this.ranges[i];
    if ((prev && prev.address + prev.size > address) || (next && next.address < address + size)) {
      throw new VfioError(Errno.EEXIST, `DMA_MAP [0x${address.toString(16)}, +0x${size.toString(16)}) overlaps an existing mapping`);
    }
    if (fd !== null) {
      if (!pageAligned(offset)) throw new VfioError(Errno.EINVAL, 'DMA_MAP fd offset not page aligned');
      let fileSize: number;
      try {
        fileSize = native.fileSize(fd);
      } catch (e) {
        throw new VfioError(Errno.EBADF, `DMA_MAP fd: ${(e as Error).message}`);
      }
      // A range beyond the end of the file would SIGBUS on first touch.
      if (offset + size > fileSize) throw new VfioError(Errno.EINVAL, `DMA_MAP fd range ends at ${offset + size}, file has ${fileSize} bytes`);
    }
    const windows = fd === null ? [] : new Array<ArrayBuffer | null>(Math.ceil(size / WINDOW)).fill(null);
    this.ranges.splice(i, 0, { address, size, flags, fd, offset, windows, pins: new Set(), unmapped: false });
  }

  /**
   * Removes whole mappings inside [address, address + size) (all with the ALL
   * flag). Pins in them are revoked and views unmapped before this returns.
   */
  unmap(flags: number, address: number, size: number): number {
    if (flags & DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) throw new VfioError(Errno.ENOTSUP, 'dirty page tracking is not supported');
    if (flags & ~DMA_UNMAP_FLAG_ALL) throw new VfioError(Errno.EINVAL, `DMA_UNMAP unknown flags 0x${flags.toString(16)}`);
    let victims: DmaRange[];
    if (flags & DMA_UNMAP_FLAG_ALL) {
      if (address !== 0 || size !== 0) throw new VfioError(Errno.EINVAL, 'DMA_UNMAP ALL requires address = size = 0');
      victims = this.ranges;
      this.ranges = [];
    } else {
      if (size === 0 || !pageAligned(address) || !pageAligned(size)) throw new VfioError(Errno.EINVAL, 'DMA_UNMAP range is empty or not page aligned');
      const end = address + size;
      for (const r of this.ranges) {
        const rEnd = r.address + r.size;
        if (r.address < end && rEnd > address && (r.address < address || rEnd > end)) {
          throw new VfioError(Errno.EINVAL, `DMA_UNMAP [0x${address.toString(16)}, +0x${size.toString(16)}) would bisect a mapping`);
        }
      }
      victims = this.ranges.filter((r) => r.address >= address && r.address + r.size <= end);
      if (victims.length === 0) throw new VfioError(Errno.ENOENT, `DMA_UNMAP [0x${address.toString(16)}, +0x${size.toString(16)}) matches no mapping`);
      this.ranges = this.ranges.filter((r) => !victims.includes(r));
    }
    let freed = 0;
    for (const r of victims) {
      this.release(r);
      freed += r.size;
    }
    return freed;
  }

  /** Drops everything (client gone). */
  clear(): void {
    const all = this.ranges;
    this.ranges = [];
    for (const r of all) this.release(r);
    this.peer = null;
  }

  private release(r: DmaRange): void {
    r.unmapped = true;
    // The unpin rule: every holder lets go before the range disappears.
    for (const p of [...r.pins]) {
      if (p.released) continue; // already revoked through another range it spans
      // Uncharge before onRevoke: a release() from inside it is then a no-op (r is no
      // longer in this.ranges, so unpin() would not find it and never uncharge).
      p.released = true;
      this.pinnedBytes -= p.length;
      for (const o of this.ranges) o.pins.delete(p);
      p.onRevoke?.();
    }
    r.pins.clear();
    for (const w of r.windows) if (w) native.munmap(w);
    r.windows = [];
    if (r.fd !== null) native.close(r.fd);
  }

  private insertionPoint(address: number): number {
    let lo = 0;
    let hi = this.ranges.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if ((this.ranges[mid] as DmaRange).address < address) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  private find(address: number): DmaRange | null {
    const i = this.insertionPoint(address + 1) - 1;
    const r = this.ranges[i];
    return r && address >= r.address && address < r.address + r.size ? r : null;
  }

  /** Splits [address, +length) into segments of mapped ranges; EFAULT on any hole. */
  translate(address: Iova, length: number, write: boolean): Segment[] {
    if (length < 0 || !Number.isSafeInteger(address + length)) throw new VfioError(Errno.EINVAL, 'bad DMA length');
    const out: Segment[] = [];
    let at = address as number;
    const end = at + length;
    while (at < end) {
      const r = this.find(at);
      if (!r) throw new VfioError(Errno.EFAULT, `guest address 0x${at.toString(16)} is not mapped`);
      const need = write ? DMA_FLAG_WRITE : DMA_FLAG_READ;
      if (!(r.flags & need)) throw new VfioError(Errno.EPERM, `guest address 0x${at.toString(16)} is not ${write ? 'writable' : 'readable'}`);
      const off = at - r.address;
      const n = Math.min(end - at, r.size - off);
      out.push({ range: r, offset: off, length: n });
      at += n;
    }
    return out;
  }

  /**
   * A transfer that awaited a DMA message may find a range it translated before
   * unmapped since: its fd is closed (the number may be reused), so fail instead.
   */
  private live(r: DmaRange): void {
    if (r.unmapped) throw new VfioError(Errno.EFAULT, `guest range 0x${r.address.toString(16)} was unmapped during the transfer`);
  }

  /** A direct view of part of an fd-backed range, split at window boundaries by the caller. */
  private view(r: DmaRange, offset: number, length: number): Uint8Array {
    this.live(r);
    const w = Math.floor(offset / WINDOW);
    const within = offset - w * WINDOW;
    if (within + length > WINDOW) throw new Error('view crosses a window');
    let ab = r.windows[w];
    if (!ab) {
      const wlen = Math.min(WINDOW, r.size - w * WINDOW);
      ab = native.mmap(r.fd as number, wlen, r.offset + w * WINDOW, (r.flags & DMA_FLAG_WRITE) !== 0);
      r.windows[w] = ab;
    }
    return new Uint8Array(ab, within, length);
  }

  private *pieces(segs: Segment[]): Generator<{ seg: Segment; offset: number; length: number }> {
    for (const seg of segs) {
      let off = seg.offset;
      let left = seg.length;
      while (left > 0) {
        const n = Math.min(left, WINDOW - (off % WINDOW));
        yield { seg, offset: off, length: n };
        off += n;
        left -= n;
      }
    }
  }

  /** Reads guest memory: directly for fd-backed ranges, by DMA_READ messages otherwise. */
  async read(address: Iova, out: Uint8Array): Promise<void> {
    let at = 0;
    for (const p of this.pieces(this.translate(address, out.length, false))) {
      if (p.seg.range.fd !== null) out.set(this.view(p.seg.range, p.offset, p.length), at);
      else {
        if (!this.peer) throw new VfioError(Errno.ENODEV, 'no client to serve message-based DMA');
        this.live(p.seg.range);
        out.set(await this.peer.dmaRead(p.seg.range.address + p.offset, p.length), at);
      }
      at += p.length;
    }
  }

  async write(address: Iova, data: Uint8Array): Promise<void> {
    let at = 0;
    for (const p of this.pieces(this.translate(address, data.length, true))) {
      const part = data.subarray(at, at + p.length);
      if (p.seg.range.fd !== null) this.view(p.seg.range, p.offset, p.length).set(part);
      else {
        if (!this.peer) throw new VfioError(Errno.ENODEV, 'no client to serve message-based DMA');
        this.live(p.seg.range);
        await this.peer.dmaWrite(p.seg.range.address + p.offset, part);
      }
      at += p.length;
    }
  }

  /**
   * Pins [address, +length) for direct access (fd-backed ranges only), charged
   * against the pin limit. `onRevoke` runs if the client unmaps the range first.
   */
  pin(address: Iova, length: number, writable: boolean, onRevoke: (() => void) | null = null): Pin {
    const segs = this.translate(address, length, writable);
    for (const s of segs) if (s.range.fd === null) throw new VfioError(Errno.EFAULT, 'range has no shared memory to pin');
    const charged = Math.ceil(length / PAGE_SIZE) * PAGE_SIZE;
    if (this.pinnedBytes + charged > this.pinLimit) throw new VfioError(Errno.ENOMEM, `pin of ${length} bytes exceeds the limit of ${this.pinLimit}`);
    const views = [...this.pieces(segs)].map((p) => this.view(p.seg.range, p.offset, p.length));
    const pin = new Pin(address, charged, writable, views, this, onRevoke);
    for (const s of segs) s.range.pins.add(pin);
    this.pinnedBytes += charged;
    return pin;
  }

  unpin(pin: Pin): void {
    let found = false;
    for (const r of this.ranges) if (r.pins.delete(pin)) found = true;
    if (found) this.pinnedBytes -= pin.length;
  }
}
