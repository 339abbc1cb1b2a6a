// Small helpers shared by the encoders: a growable output buffer and reusable
// scratch arrays. Encoders are synchronous, so module-level scratch space is
// never used by two encodings at once.
import { toClientValues } from '../pixel-format.js';
import type { Frame, PixelFormat, Rect } from '../types.js';

/** An append-only byte buffer that grows by doubling; `bytes()` returns a trimmed copy when most of it is slack. */
export class ByteSink {
  buf: Uint8Array;
  len = 0;

  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(64, capacity));
  }

  /** Makes room for `n` more bytes and returns the offset to write them at (does not advance). */
  reserve(n: number): number {
    const need = this.len + n;
    if (need > this.buf.length) {
      let cap = this.buf.length * 2;
      while (cap < need) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.buf.subarray(0, this.len));
      this.buf = next;
    }
    return this.len;
  }

  u8(v: number): void {
    if (this.len >= this.buf.length) this.reserve(1);
    this.buf[this.len++] = v;
  }

  append(bytes: Uint8Array): void {
    const at = this.reserve(bytes.length);
    this.buf.set(bytes, at);
    this.len += bytes.length;
  }

  /** The bytes written so far. Owned by the caller afterwards. */
  bytes(): Uint8Array {
    if (this.len * 2 < this.buf.length && this.buf.length > 4096) return this.buf.slice(0, this.len);
    return this.buf.subarray(0, this.len);
  }
}

let valueScratch = new Uint32Array(64 * 64);

/** Client pixel values of `rect` in a module-level scratch array (valid until the next call). */
export function rectValues(frame: Frame, rect: Rect, pf: PixelFormat): Uint32Array {
  const n = rect.w * rect.h;
  if (valueScratch.length < n) valueScratch = new Uint32Array(Math.max(n, valueScratch.length * 2));
  return toClientValues(frame, rect, pf, valueScratch);
}

/** True for an empty rect (nothing to send). */
export function isEmpty(rect: Rect): boolean {
  return rect.w <= 0 || rect.h <= 0;
}
