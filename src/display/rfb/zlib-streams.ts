// The per-client half of zlib-based encodings. A client keeps one inflater per
// stream for the whole connection, so we keep the matching deflaters: every
// piece goes into the same stream and ends with Z_SYNC_FLUSH (never Z_FINISH).
// Streams are keyed by encoding family as well as number, because the client's
// ZRLE stream, zlib stream and Tight streams 0–3 are distinct inflaters: a
// client that switches encodings must not see one encoding's history in another.
//
// Compression is serialised per client: calls are chained in the order they are
// made, whether or not the caller awaits in between.
import zlib from 'node:zlib';
import { compactLength, TIGHT_MIN_TO_COMPRESS } from './encoders/tight.js';
import type { EncodedRect } from './types.js';

const TIGHT = 7;
const ZRLE = 16;
const ZLIB = 6;

/** Slot of (encoding, stream): Tight 0–3, ZRLE 4, zlib 5. */
function slotOf(encoding: number, stream: number): number {
  if (encoding === TIGHT) {
    if (stream >= 0 && stream <= 3 && Number.isInteger(stream)) return stream;
  } else if (stream === 0) {
    if (encoding === ZRLE) return 4;
    if (encoding === ZLIB) return 5;
  }
  throw new RangeError(`no zlib stream ${stream} for encoding ${encoding}`);
}

function clampLevel(level: number): number {
  return Number.isFinite(level) ? Math.min(9, Math.max(0, Math.round(level))) : 2;
}

class Stream {
  readonly deflate: zlib.Deflate;
  level: number;
  chunks: Buffer[] = [];
  size = 0;
  error: Error | null = null;

  constructor(level: number) {
    this.level = level;
    // flush: every write ends with a sync flush, so one write is one complete piece.
    // 64 KiB output chunks: fewer thread-pool round trips for full-frame pieces.
    this.deflate = zlib.createDeflate({ level, flush: zlib.constants.Z_SYNC_FLUSH, chunkSize: 64 * 1024 });
    this.deflate.on('data', (c: Buffer) => {
      this.chunks.push(c);
      this.size += c.length;
    });
    this.deflate.on('error', (e: Error) => {
      this.error = e;
    });
  }

  take(): Buffer {
    const out = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    this.size = 0;
    return out;
  }
}

function endsWithSyncMarker(s: Stream): boolean {
  // A sync flush ends with an empty stored block: 00 00 ff ff.
  let need = 4;
  const tail = [0xff, 0xff, 0x00, 0x00];
  for (let i = s.chunks.length - 1; i >= 0 && need > 0; i--) {
    const c = s.chunks[i]!;
    for (let j = c.length - 1; j >= 0 && need > 0; j--, need--) if (c[j] !== tail[4 - need]) return false;
  }
  return need === 0;
}

/** A client's persistent deflate streams (created lazily at the client's compression level). */
export class ZlibStreams {
  readonly #streams: (Stream | undefined)[] = [];
  #level: number;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;
  /** Rejects the operation in progress (there is at most one: they are serialised). */
  #abort: ((e: Error) => void) | null = null;

  constructor(compressLevel = 2) {
    this.#level = clampLevel(compressLevel);
  }

  get compressLevel(): number {
    return this.#level;
  }

  /** Takes effect for each stream before its next piece (deflateParams; the client needs no reset). */
  setCompressLevel(level: number): void {
    this.#level = clampLevel(level);
  }

  /** Number of deflate streams created so far. */
  get streamCount(): number {
    return this.#streams.filter((s) => s !== undefined).length;
  }

  /** Compresses `data` into stream (`encoding`, `stream`), ending with a sync flush. Queued behind earlier calls. */
  compress(encoding: number, stream: number, data: Uint8Array): Promise<Buffer> {
    const slot = slotOf(encoding, stream);
    const run = this.#tail.then(() => this.#run(slot, data));
    this.#tail = run.catch(() => undefined);
    return run;
  }

  async #run(slot: number, data: Uint8Array): Promise<Buffer> {
    if (this.#closed) throw new Error('zlib streams closed');
    let s = this.#streams[slot];
    if (!s) {
      s = new Stream(this.#level);
      this.#streams[slot] = s;
    } else if (s.level !== this.#level) {
      const st = s;
      const level = this.#level;
      await this.#pending<void>((resolve) => st.deflate.params(level, zlib.constants.Z_DEFAULT_STRATEGY, resolve));
      if (st.error) throw st.error;
      st.level = level;
    }
    if (data.length === 0) return s.take(); // anything params() emitted, else empty
    const st = s;
    await this.#pending<void>((resolve, reject) => st.deflate.write(data, (err) => (err ? reject(err) : resolve())));
    // 'data' events are emitted before the write completes; make sure, as zlib's
    // output for a sync-flushed write always ends with 00 00 ff ff.
    for (let i = 0; i < 8 && !endsWithSyncMarker(st); i++) await new Promise((r) => setImmediate(r));
    if (st.error) throw st.error;
    if (!endsWithSyncMarker(st)) throw new Error('zlib: sync-flushed output incomplete');
    return st.take();
  }

  #pending<T>(start: (resolve: (v: T) => void, reject: (e: Error) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#abort = reject;
      start(
        (v) => {
          this.#abort = null;
          resolve(v);
        },
        (e) => {
          this.#abort = null;
          reject(e);
        },
      );
    });
  }

  /** Destroys every stream; the piece in progress and later compress calls fail. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort?.(new Error('zlib streams closed'));
    this.#abort = null;
    for (const s of this.#streams) s?.deflate.destroy();
    this.#streams.length = 0;
  }
}

function u32(n: number): Uint8Array {
  return Uint8Array.of(n >>> 24, n >>> 16, n >>> 8, n);
}

/**
 * The wire payload of an encoded rectangle (everything after its 12-byte header), in order:
 * raw pieces as they are; zlib pieces compressed in this client's stream with a sync flush and
 * framed ('u32': U32 length; 'compact': Tight compact length, or the bytes themselves uncompressed
 * when fewer than 12). All compressions are queued at call time, so calling finishRect for
 * successive rectangles without awaiting still keeps every stream in order. A rejection means the
 * client's streams can no longer be trusted: close the connection. `compressLevel`, when
 * given, is the client's current level (same as calling streams.setCompressLevel first).
 */
export async function finishRect(er: EncodedRect, streams: ZlibStreams, compressLevel?: number): Promise<Uint8Array[]> {
  if (compressLevel !== undefined) streams.setCompressLevel(compressLevel);
  const parts: (Uint8Array | Promise<Uint8Array[]>)[] = [];
  for (const p of er.pieces) {
    if (p.kind === 'raw') parts.push(p.bytes);
    else if (p.framing === 'compact') {
      if (p.bytes.length < TIGHT_MIN_TO_COMPRESS) parts.push(p.bytes);
      else parts.push(streams.compress(er.encoding, p.stream, p.bytes).then((z) => [compactLength(z.length), z]));
    } else if (p.bytes.length === 0) parts.push(u32(0));
    else parts.push(streams.compress(er.encoding, p.stream, p.bytes).then((z) => [u32(z.length), z]));
  }
  const out: Uint8Array[] = [];
  for (const part of await Promise.all(parts)) {
    if (part instanceof Uint8Array) out.push(part);
    else out.push(...part);
  }
  return out;
}

/** The 12-byte rectangle header: U16 x, y, w, h and S32 encoding. */
export function rectHeader(er: EncodedRect): Uint8Array {
  const { x, y, w, h } = er.rect;
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  v.setUint16(0, x);
  v.setUint16(2, y);
  v.setUint16(4, w);
  v.setUint16(6, h);
  v.setInt32(8, er.encoding);
  return b;
}
