// Pixel conversion from guest plane formats, row by row. Every format is decoded
// in one place, into canonical 0x00RRGGBB values; packed RGB is derived from those.
import { DrmFormat, type PlaneInfo } from './plane.js';

/** Decodes `n` pixels of `format` at `src[at…]` into 0x00RRGGBB values at `dst[dstAt…]`. */
export function rowToXrgb(format: number, src: Uint8Array, at: number, n: number, dst: Uint32Array, dstAt: number): void {
  switch (format) {
    case DrmFormat.XRGB8888:
      for (let i = 0, s = at; i < n; i++, s += 4) dst[dstAt + i] = ((src[s + 2] as number) << 16) | ((src[s + 1] as number) << 8) | (src[s] as number);
      return;
    case DrmFormat.BGRX8888:
      for (let i = 0, s = at; i < n; i++, s += 4) dst[dstAt + i] = ((src[s + 1] as number) << 16) | ((src[s + 2] as number) << 8) | (src[s + 3] as number);
      return;
    case DrmFormat.RGB888:
      for (let i = 0, s = at; i < n; i++, s += 3) dst[dstAt + i] = ((src[s + 2] as number) << 16) | ((src[s + 1] as number) << 8) | (src[s] as number);
      return;
    case DrmFormat.RGB565:
      for (let i = 0, s = at; i < n; i++, s += 2) {
        const v = (src[s] as number) | ((src[s + 1] as number) << 8);
        const r = (v >> 11) & 0x1f;
        const g = (v >> 5) & 0x3f;
        const b = v & 0x1f;
        // Replicate high bits into low bits so full scale maps to 255.
        dst[dstAt + i] = (((r << 3) | (r >> 2)) << 16) | (((g << 2) | (g >> 4)) << 8) | ((b << 3) | (b >> 2));
      }
      return;
    default:
      throw new RangeError(`unsupported pixel format 0x${format.toString(16)}`);
  }
}

let scratch = new Uint32Array(0);

/** Converts one row of `width` pixels at `src[at…]` into RGB bytes at `dst[dstAt…]`. */
export function rowToRgb(format: number, src: Uint8Array, at: number, width: number, dst: Uint8Array, dstAt: number): void {
  if (scratch.length < width) scratch = new Uint32Array(width);
  rowToXrgb(format, src, at, width, scratch, 0);
  for (let i = 0, o = dstAt; i < width; i++, o += 3) {
    const p = scratch[i] as number;
    dst[o] = p >> 16;
    dst[o + 1] = (p >> 8) & 0xff;
    dst[o + 2] = p & 0xff;
  }
}

/** Copies the plane's pixels out of `fb` (a consistent snapshot for encoders). */
export function snapshot(plane: PlaneInfo, fb: Uint8Array, out?: Uint8Array): Uint8Array {
  const dst = out && out.length >= plane.size ? out : new Uint8Array(plane.size);
  dst.set(fb.subarray(plane.offset, plane.offset + plane.size));
  return dst;
}
