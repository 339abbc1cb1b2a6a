// The contract between the protocol session and whatever device model serves
// it. The session validates wire formats; the backend validates device meaning.
// Defined here (lower layer) and implemented by the device model (upper layer).
import type { RegionCap } from './codec.js';

/** A protocol-level failure carrying the errno for the error reply. */
export class VfioError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

export interface DeviceInfo {
  flags: number;
  numRegions: number;
  numIrqs: number;
}

export interface RegionInfo {
  flags: number;
  size: number;
  /** Offset into `fd` at which the region's mappable part starts. */
  offset: number;
  caps: readonly RegionCap[];
  /** Shared-memory fd offered for mmap, still owned by the backend (the session sends a duplicate). */
  fd: number | null;
}

export interface IrqInfo {
  flags: number;
  count: number;
}

export interface DmaMapRequest {
  flags: number;
  /** Offset into `fd`. */
  offset: number;
  address: number;
  size: number;
  /** Ownership passes to the backend (it must close it on unmap or error). */
  fd: number | null;
}

export interface SetIrqsRequest {
  flags: number;
  index: number;
  start: number;
  count: number;
  /** DATA_BOOL payload (one byte per vector), else null. */
  bools: Uint8Array | null;
  /** DATA_EVENTFD fds; ownership passes to the backend. */
  fds: number[];
}

/** Services the session offers the backend for the lifetime of one client connection. */
export interface PeerServices {
  /** Reads guest memory through DMA_READ messages (for ranges mapped without an fd). */
  dmaRead(address: number, length: number): Promise<Uint8Array>;
  /** Writes guest memory through DMA_WRITE messages. */
  dmaWrite(address: number, data: Uint8Array): Promise<void>;
  /** Largest transfer the peer accepts in one message. */
  readonly maxDataXferSize: number;
  log(message: string): void;
}

export interface VfioUserBackend {
  /** A client connected and negotiated. */
  attach(peer: PeerServices): void;
  /** The client is gone: drop every DMA mapping and close every fd it sent; keep device state. */
  detach(reason: string | null): void;
  deviceInfo(): DeviceInfo;
  /** Throws VfioError(EINVAL) for an index out of range. */
  regionInfo(index: number): RegionInfo;
  /** Fills `out` (exactly `count` bytes). Throws VfioError on bad offsets. */
  regionRead(index: number, offset: number, out: Uint8Array): void;
  regionWrite(index: number, offset: number, data: Uint8Array): void;
  irqInfo(index: number): IrqInfo;
  setIrqs(req: SetIrqsRequest): void;
  dmaMap(req: DmaMapRequest): void;
  /** Must drop every reference into the range before returning (the unpin rule). */
  dmaUnmap(flags: number, address: number, size: number): void;
  reset(): void;
  /** DEVICE_FEATURE; returns the GET data to append, or throws (ENOTSUP when unsupported). */
  feature?(feature: number, flags: number, data: Uint8Array): Uint8Array | null;
}
