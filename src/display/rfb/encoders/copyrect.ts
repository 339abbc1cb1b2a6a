// CopyRect (encoding 1): the client copies an area of its own framebuffer.
// Not a frame encoder: the session decides when a move was detected.
import type { EncodedRect, Rect } from '../types.js';

export const COPY_RECT = 1;

/** A CopyRect rectangle: `dst` is filled from the same-sized area whose top-left corner is `src`. */
export function copyRect(src: { x: number; y: number }, dst: Rect): EncodedRect {
  if (src.x < 0 || src.y < 0 || src.x > 0xffff || src.y > 0xffff) throw new RangeError('CopyRect source out of range');
  const b = new Uint8Array(4);
  b[0] = src.x >> 8;
  b[1] = src.x;
  b[2] = src.y >> 8;
  b[3] = src.y;
  return { rect: { ...dst }, encoding: COPY_RECT, pieces: [{ kind: 'raw', bytes: b }] };
}
