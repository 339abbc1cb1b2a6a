// Device regions (BARs and device-specific regions). A region is served from
// trapped registers, from shared memory the client may map directly, or from
// both (sparse mmap: some areas mapped, the rest trapped). Bounds are checked
// once here so device handlers never see an access outside their region.
import { VfioError } from '../vfio-user/backend.js';
import { Errno } from '../vfio-user/constants.js';
import type { SharedMemory } from './shared-memory.js';

export type AccessWidth = 1 | 2 | 4;

/**
 * Trapped registers. Accesses are split into naturally aligned pieces of at
 * most 4 bytes, so a handler sees only widths 1, 2 and 4 at aligned offsets.
 */
export interface RegisterFile {
  read(offset: number, width: AccessWidth): number;
  write(offset: number, width: AccessWidth, value: number): void;
}

export interface MemoryBacking {
  memory: SharedMemory;
  /** Offset of this region inside `memory`. */
  offset: number;
  /** Mappable areas relative to the region; default: the whole region. */
  areas?: { offset: number; size: number }[];
}

export interface RegionDefinition {
  size: number;
  readable?: boolean;
  writable?: boolean;
  registers?: RegisterFile;
  backing?: MemoryBacking;
}

export function regionAccess(def: RegionDefinition, name: string, offset: number, data: Uint8Array, write: boolean): void {
  const len = data.length;
  if (!Number.isSafeInteger(offset) || offset < 0 || len === 0 || offset + len > def.size) {
    throw new VfioError(Errno.EINVAL, `${name}: ${write ? 'write' : 'read'} of ${len} bytes at 0x${offset.toString(16)} outside its ${def.size} bytes`);
  }
  if (write ? def.writable === false : def.readable === false) throw new VfioError(Errno.EPERM, `${name} is not ${write ? 'writable' : 'readable'}`);
  const b = def.backing;
  if (b && inAreas(b, offset, len, def.size)) {
    const at = b.offset + offset;
    if (write) b.memory.bytes.set(data, at);
    else data.set(b.memory.bytes.subarray(at, at + len));
    return;
  }
  const regs = def.registers;
  if (!regs) {
    if (!write) data.fill(0xff); // nothing decodes there: all-ones, like an empty bus
    return;
  }
  // Split into naturally aligned 1/2/4-byte accesses.
  let at = 0;
  while (at < len) {
    const off = offset + at;
    const left = len - at;
    const w: AccessWidth = off % 4 === 0 && left >= 4 ? 4 : off % 2 === 0 && left >= 2 ? 2 : 1;
    if (write) {
      let v = 0;
      for (let i = w - 1; i >= 0; i--) v = v * 256 + (data[at + i] as number);
      regs.write(off, w, v >>> 0);
    } else {
      let v = regs.read(off, w) >>> 0;
      for (let i = 0; i < w; i++) {
        data[at + i] = v & 0xff;
        v >>>= 8;
      }
    }
    at += w;
  }
}

function inAreas(b: MemoryBacking, offset: number, len: number, size: number): boolean {
  if (!b.areas) return offset + len <= size;
  return b.areas.some((a) => offset >= a.offset && offset + len <= a.offset + a.size);
}
