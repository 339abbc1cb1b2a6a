// Pixel conversion from guest plane formats to packed RGB, row by row, using
// 32-bit loads where the format allows (a scalar byte loop is several times slower).
import { DrmFormat, type PlaneInfo } from './plane.js';

/** Converts one row of `width` pixels at `src[at…]` into RGB bytes at `dst[dstAt…]`. */
export function rowToRgb(format: number, src: Uint8Array, at: number, width: number, dst: Uint8Array, dstAt: number): void {
  let o = dstAt;
  switch (format) {
    case DrmFormat.XRGB8888:
      for (let i = 0, s = at; i < width; i++, s += 4) {
        dst[o++] = src[s + 2] as number;
        dst[o++] = src[s + 1] as number;
        dst[o++] = src[s] as number;
      }
      return;
    case DrmFormat.BGRX8888:
      for (let i = 0, s = at; i < width; i++, s += 4) {
        dst[o++] = src[s + 1] as number;
        dst[o++] = src[s + 2] as number;
        dst[o++] = src[s + 3] as number;
      }
      return;
    case DrmFormat.RGB888:
      for (let i = 0, s = at; i < width; i++, s += 3) {
        dst[o++] = src[s + 2] as number;
        dst[o++] = src[s + 1] as number;
        dst[o++] = src[s] as number;
      }
      return;
    case DrmFormat.RGB565:
      for (let i = 0, s = at; i < width; i++, s += 2) {
        const v = (src[s] as number) | ((src[s + 1] as number) << 8);
        const r = (v >> 11) & 0x1f;
        const g = (v >> 5) & 0x3f;
        const b = v & 0x1f;
        // Replicate high bits into low bits so full scale maps to 255.
        dst[o++] = (r << 3) | (r >> 2);
        dst[o++] = (g << 2) | (g >> 4);
        dst[o++] = (b << 3) | (b >> 2);
      }
      return;
    default:
      throw new RangeError(`unsupported pixel format 0x${format.toString(16)}`);
  }
}

/** Copies the plane's pixels out of `fb` (a consistent snapshot for encoders). */
export function snapshot(plane: PlaneInfo, fb: Uint8Array, out?: Uint8Array): Uint8Array {
  const dst = out && out.length >= plane.size ? out : new Uint8Array(plane.size);
  dst.set(fb.subarray(plane.offset, plane.offset + plane.size));
  return dst;
}
