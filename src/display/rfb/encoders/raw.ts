// Raw (encoding 0): the rectangle's pixels in the client's format, row by row.
import { convertRect } from '../pixel-format.js';
import type { EncodedRect, Encoder, Frame, PixelFormat, Rect } from '../types.js';
import { isEmpty } from './common.js';

export const RAW = 0;

/** The Raw payload of `rect`: w × h PIXELs. */
export function rawBytes(frame: Frame, rect: Rect, pf: PixelFormat): Uint8Array {
  const out = new Uint8Array(rect.w * rect.h * (pf.bitsPerPixel >> 3));
  convertRect(frame, rect, pf, out, 0);
  return out;
}

export const encodeRaw: Encoder = (frame, rect, pf): EncodedRect[] => {
  if (isEmpty(rect)) return [];
  return [{ rect: { ...rect }, encoding: RAW, pieces: [{ kind: 'raw', bytes: rawBytes(frame, rect, pf) }] }];
};
