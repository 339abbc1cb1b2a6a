// Pure encode/decode of vfio-user messages: bytes in, numbers out, and back.
// No sockets here. Every reader checks lengths before touching bytes, and u64
// values beyond 2^53 are reported as invalid rather than silently rounded.
import {
  FLAG_ERROR,
  FLAG_NO_REPLY,
  FLAG_TYPE_MASK,
  HEADER_SIZE,
  MsgType,
  REGION_CAP_MSIX_MAPPABLE,
  REGION_CAP_SPARSE_MMAP,
  REGION_CAP_TYPE,
} from './constants.js';
import { CAP_HEADER, type Layout } from './messages.js';

export interface Header {
  id: number;
  cmd: number;
  size: number;
  flags: number;
  error: number;
}

export function newHeader(): Header {
  return { id: 0, cmd: 0, size: 0, flags: 0, error: 0 };
}

export function readHeader(v: DataView, at: number, h: Header): void {
  h.id = v.getUint16(at, true);
  h.cmd = v.getUint16(at + 2, true);
  h.size = v.getUint32(at + 4, true);
  h.flags = v.getUint32(at + 8, true);
  h.error = v.getUint32(at + 12, true);
}

export function writeHeader(v: DataView, at: number, id: number, cmd: number, size: number, flags: number, error = 0): void {
  v.setUint16(at, id, true);
  v.setUint16(at + 2, cmd, true);
  v.setUint32(at + 4, size, true);
  v.setUint32(at + 8, flags, true);
  v.setUint32(at + 12, error, true);
}

export const isReply = (flags: number): boolean => (flags & FLAG_TYPE_MASK) === MsgType.REPLY;
export const isCommand = (flags: number): boolean => (flags & FLAG_TYPE_MASK) === MsgType.COMMAND;
export const wantsReply = (flags: number): boolean => (flags & FLAG_NO_REPLY) === 0;
export const isError = (flags: number): boolean => (flags & FLAG_ERROR) !== 0;

export type Fields = Record<string, number>;

/** Largest u64 high word whose value still fits a double exactly. */
const MAX_SAFE_HI = 0x1fffff;

export function readU64(v: DataView, at: number): number {
  const hi = v.getUint32(at + 4, true);
  if (hi > MAX_SAFE_HI) return Number.NaN;
  return hi * 0x1_0000_0000 + v.getUint32(at, true);
}

export function writeU64(v: DataView, at: number, value: number): void {
  v.setUint32(at, value >>> 0, true);
  v.setUint32(at + 4, Math.floor(value / 0x1_0000_0000) >>> 0, true);
}

export const DECODE_OK = 0;
export const DECODE_SHORT = 1;
export const DECODE_UNSAFE = 2;

/**
 * Decodes the fixed fields of `layout` from `v[at, at+avail)` into `out`.
 * Returns DECODE_SHORT when fewer than layout.size bytes are available and
 * DECODE_UNSAFE when a u64 does not fit a double exactly.
 */
export function decodeFields(layout: Layout, v: DataView, at: number, avail: number, out: Fields): number {
  if (avail < layout.size) return DECODE_SHORT;
  for (const f of layout.fields) {
    const o = at + f.offset;
    if (f.type === 'u32') out[f.name] = v.getUint32(o, true);
    else if (f.type === 'u64') {
      const x = readU64(v, o);
      if (Number.isNaN(x)) return DECODE_UNSAFE;
      out[f.name] = x;
    } else out[f.name] = v.getUint16(o, true);
  }
  return DECODE_OK;
}

/** Encodes the fixed fields of `layout` at `at`; missing values are written as 0. */
export function encodeFields(layout: Layout, v: DataView, at: number, values: Fields): number {
  for (const f of layout.fields) {
    const x = values[f.name] ?? 0;
    const o = at + f.offset;
    if (f.type === 'u32') v.setUint32(o, x >>> 0, true);
    else if (f.type === 'u64') writeU64(v, o, x);
    else v.setUint16(o, x & 0xffff, true);
  }
  return layout.size;
}

// ---------------------------------------------------------------- VERSION

export interface VersionCapabilities {
  maxMsgFds: number;
  maxDataXferSize: number;
  pgsizes: number;
  maxDmaMaps: number;
  writeMultiple: boolean;
  twinSocket: boolean;
  migration: { pgsize: number; maxBitmapSize: number } | null;
  unknownKeys: string[];
}

export const MAX_VERSION_JSON = 4096;

function positiveInt(x: unknown, max: number, name: string): number {
  if (typeof x !== 'number' || !Number.isInteger(x) || x <= 0 || x > max) {
    throw new Error(`capability ${name} must be an integer in 1..${max}, got ${JSON.stringify(x)}`);
  }
  return x;
}

/**
 * Parses the capability JSON of a VERSION message (the bytes after major/minor).
 * Missing keys take the specification's defaults.
 */
export function parseVersionCapabilities(bytes: Uint8Array): VersionCapabilities {
  if (bytes.length > MAX_VERSION_JSON) throw new Error(`capability JSON of ${bytes.length} bytes is too long`);
  const end = bytes.indexOf(0);
  // The text must end in a NUL (QEMU rejects "corrupt version reply", libvfio-user EINVAL).
  if (end < 0 && bytes.length > 0) throw new Error('capability JSON is not NUL-terminated');
  const caps: VersionCapabilities = {
    maxMsgFds: 1,
    maxDataXferSize: 1 << 20,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    writeMultiple: false,
    twinSocket: false,
    migration: null,
    unknownKeys: [],
  };
  if (end <= 0) return caps;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, end).toString('utf8');
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new Error('capability JSON does not parse');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new Error('capability JSON is not an object');
  const c = (doc as Record<string, unknown>).capabilities;
  if (c === undefined) return caps;
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new Error('"capabilities" is not an object');
  for (const [k, val] of Object.entries(c as Record<string, unknown>)) {
    switch (k) {
      case 'max_msg_fds':
        caps.maxMsgFds = positiveInt(val, 1024, k);
        break;
      case 'max_data_xfer_size':
        caps.maxDataXferSize = positiveInt(val, 1 << 30, k);
        break;
      case 'pgsizes':
        caps.pgsizes = positiveInt(val, Number.MAX_SAFE_INTEGER, k);
        break;
      case 'max_dma_maps':
        caps.maxDmaMaps = positiveInt(val, 1 << 20, k);
        break;
      case 'write_multiple':
        if (typeof val !== 'boolean') throw new Error('capability write_multiple must be a boolean');
        caps.writeMultiple = val;
        break;
      case 'twin_socket':
        caps.twinSocket = typeof val === 'object' && val !== null && (val as { supported?: unknown }).supported === true;
        break;
      case 'migration': {
        if (typeof val !== 'object' || val === null) throw new Error('capability migration must be an object');
        const m = val as Record<string, unknown>;
        caps.migration = {
          pgsize: m.pgsize === undefined ? 4096 : positiveInt(m.pgsize, 1 << 30, 'migration.pgsize'),
          maxBitmapSize: m.max_bitmap_size === undefined ? 256 << 20 : positiveInt(m.max_bitmap_size, Number.MAX_SAFE_INTEGER, 'migration.max_bitmap_size'),
        };
        break;
      }
      default:
        caps.unknownKeys.push(k);
    }
  }
  return caps;
}

/** Our VERSION reply JSON: short (QEMU's reply ceiling) and explicit about fds and transfer size. */
export function versionReplyJson(maxMsgFds: number, maxDataXferSize: number, extra: Record<string, unknown> = {}): Uint8Array {
  const text = JSON.stringify({ capabilities: { max_msg_fds: maxMsgFds, max_data_xfer_size: maxDataXferSize, ...extra } });
  const out = new Uint8Array(Buffer.byteLength(text) + 1);
  Buffer.from(out.buffer).write(text, 0, 'utf8');
  return out; // trailing NUL from the zeroed array
}

// ---------------------------------------------------------------- region capabilities

export type RegionCap =
  | { id: typeof REGION_CAP_SPARSE_MMAP; areas: ReadonlyArray<{ offset: number; size: number }> }
  | { id: typeof REGION_CAP_TYPE; type: number; subtype: number }
  | { id: typeof REGION_CAP_MSIX_MAPPABLE };

/** Size in bytes of one capability. */
function capSize(c: RegionCap): number {
  if (c.id === REGION_CAP_SPARSE_MMAP) return CAP_HEADER.size + 8 + 16 * c.areas.length;
  if (c.id === REGION_CAP_TYPE) return CAP_HEADER.size + 8;
  return CAP_HEADER.size;
}

/**
 * Serialises a capability chain whose first entry sits at `base` bytes from the
 * start of the region-info payload (offsets in `next` count from there).
 */
export function encodeRegionCaps(caps: readonly RegionCap[], base: number): Uint8Array {
  let total = 0;
  for (const c of caps) total += capSize(c);
  const out = new Uint8Array(total);
  const v = new DataView(out.buffer);
  let at = 0;
  caps.forEach((c, i) => {
    const size = capSize(c);
    const next = i + 1 < caps.length ? base + at + size : 0;
    v.setUint16(at, c.id, true);
    v.setUint16(at + 2, 1, true);
    v.setUint32(at + 4, next, true);
    const body = at + CAP_HEADER.size;
    if (c.id === REGION_CAP_SPARSE_MMAP) {
      v.setUint32(body, c.areas.length, true);
      c.areas.forEach((a, j) => {
        writeU64(v, body + 8 + 16 * j, a.offset);
        writeU64(v, body + 16 + 16 * j, a.size);
      });
    } else if (c.id === REGION_CAP_TYPE) {
      v.setUint32(body, c.type >>> 0, true);
      v.setUint32(body + 4, c.subtype >>> 0, true);
    }
    at += size;
  });
  return out;
}

/** Parses a capability chain (client side). `payload` is the whole region-info payload. */
export function decodeRegionCaps(payload: Uint8Array, first: number): RegionCap[] {
  const v = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const caps: RegionCap[] = [];
  let at = first;
  const seen = new Set<number>();
  while (at !== 0) {
    if (seen.has(at) || at + CAP_HEADER.size > payload.length) throw new Error(`bad capability offset ${at}`);
    seen.add(at);
    const id = v.getUint16(at, true);
    const next = v.getUint32(at + 4, true);
    const body = at + CAP_HEADER.size;
    if (id === REGION_CAP_SPARSE_MMAP) {
      if (body + 8 > payload.length) throw new Error('truncated sparse-mmap capability');
      const n = v.getUint32(body, true);
      if (body + 8 + 16 * n > payload.length) throw new Error('truncated sparse-mmap areas');
      const areas = [];
      for (let j = 0; j < n; j++) areas.push({ offset: readU64(v, body + 8 + 16 * j), size: readU64(v, body + 16 + 16 * j) });
      caps.push({ id, areas });
    } else if (id === REGION_CAP_TYPE) {
      if (body + 8 > payload.length) throw new Error('truncated type capability');
      caps.push({ id, type: v.getUint32(body, true), subtype: v.getUint32(body + 4, true) });
    } else if (id === REGION_CAP_MSIX_MAPPABLE) {
      caps.push({ id });
    }
    at = next;
  }
  return caps;
}

export { HEADER_SIZE };
