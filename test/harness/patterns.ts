// Deterministic test pictures in the guest's pixel formats, with the RGB a
// correct decoder must produce from them.

export interface Pattern {
  width: number;
  height: number;
  /** Bytes as the guest writes them. */
  raw: Buffer;
  /** The expected picture as packed RGB. */
  rgb: Uint8Array;
}

/** XRGB8888 (bytes B, G, R, X): gradients and a 32-px checkerboard, varied by `seed`. */
export function xrgbPattern(width: number, height: number, seed = 0): Pattern {
  const raw = Buffer.alloc(width * height * 4);
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const b = ((x * 255) / width + seed) & 0xff;
      const g = ((y * 255) / height + 3 * seed) & 0xff;
      const r = ((x >> 5) ^ (y >> 5)) & 1 ? 255 - (seed & 0x3f) : seed & 0x3f;
      raw[i * 4] = b;
      raw[i * 4 + 1] = g;
      raw[i * 4 + 2] = r;
      raw[i * 4 + 3] = 0xa5; // the X byte must be ignored
      rgb[i * 3] = r;
      rgb[i * 3 + 1] = g;
      rgb[i * 3 + 2] = b;
    }
  return { width, height, raw, rgb };
}

/** RGB565 little-endian. */
export function rgb565Pattern(width: number, height: number): Pattern {
  const raw = Buffer.alloc(width * height * 2);
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const r5 = Math.floor((x * 31) / (width - 1));
      const g6 = Math.floor((y * 63) / (height - 1));
      const b5 = ((x >> 4) ^ (y >> 4)) & 1 ? 31 : 0;
      raw.writeUInt16LE((r5 << 11) | (g6 << 5) | b5, i * 2);
      rgb[i * 3] = (r5 << 3) | (r5 >> 2);
      rgb[i * 3 + 1] = (g6 << 2) | (g6 >> 4);
      rgb[i * 3 + 2] = (b5 << 3) | (b5 >> 2);
    }
  return { width, height, raw, rgb };
}

/** RGB888 (bytes B, G, R). */
export function rgb888Pattern(width: number, height: number): Pattern {
  const raw = Buffer.alloc(width * height * 3);
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      const i = y * width + x;
      const r = (x * 7 + y) & 0xff;
      const g = ((x >> 3) ^ (y >> 3)) & 1 ? 200 : 40;
      const b = (y * 255) / height;
      raw[i * 3] = b;
      raw[i * 3 + 1] = g;
      raw[i * 3 + 2] = r;
      rgb[i * 3] = r;
      rgb[i * 3 + 1] = g;
      rgb[i * 3 + 2] = b & 0xff;
    }
  return { width, height, raw, rgb };
}

/** Number of pixels that differ between two packed RGB pictures of equal size. */
export function diffPixels(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Math.max(a.length, b.length) / 3;
  let n = 0;
  for (let i = 0; i < a.length; i += 3) if (a[i] !== b[i] || a[i + 1] !== b[i + 1] || a[i + 2] !== b[i + 2]) n++;
  return n;
}
