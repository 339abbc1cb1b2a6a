// The pointer shape sent with the Cursor pseudo-encoding. The bochs vGPU has no
// cursor plane, so viewers that can draw a local cursor get a plain arrow and
// see where their pointer is without waiting for the guest.
import { rawBytes } from './encoders/raw.js';
import type { Frame, PixelFormat } from './types.js';

// 1 = black outline, 2 = white fill, 0 = transparent.
const ARROW = [
  '1...........',
  '11..........',
  '121.........',
  '1221........',
  '12221.......',
  '122221......',
  '1222221.....',
  '12222221....',
  '122222221...',
  '1222222221..',
  '12222222221.',
  '122222211111',
  '1222121.....',
  '1221121.....',
  '121..121....',
  '11...121....',
  '1.....121...',
  '......111...',
];

export const CURSOR_WIDTH = 12;
export const CURSOR_HEIGHT = ARROW.length;

/** The Cursor pseudo-rect payload (pixels in the client's format, then the 1-bit mask). */
export function arrowCursor(pf: PixelFormat): Uint8Array {
  const w = CURSOR_WIDTH;
  const h = CURSOR_HEIGHT;
  const pixels = new Uint32Array(w * h);
  const maskStride = Math.ceil(w / 8);
  const mask = new Uint8Array(maskStride * h);
  for (let y = 0; y < h; y++) {
    const row = ARROW[y] as string;
    for (let x = 0; x < w; x++) {
      const c = row[x];
      if (c === '.') continue;
      pixels[y * w + x] = c === '2' ? 0xffffff : 0x000000;
      mask[y * maskStride + (x >> 3)] = (mask[y * maskStride + (x >> 3)] as number) | (0x80 >> (x & 7));
    }
  }
  const frame: Frame = { width: w, height: h, pixels };
  const px = rawBytes(frame, { x: 0, y: 0, w, h }, pf);
  const out = new Uint8Array(px.length + mask.length);
  out.set(px);
  out.set(mask, px.length);
  return out;
}
