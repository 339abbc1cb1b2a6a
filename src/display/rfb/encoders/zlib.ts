// zlib (encoding 6): Raw pixels through the client's single persistent zlib
// stream, framed by a U32 length (Remmina's "best" quality picks it).
import type { EncodedRect, Encoder } from '../types.js';
import { isEmpty } from './common.js';
import { rawBytes } from './raw.js';

export const ZLIB = 6;

export const encodeZlib: Encoder = (frame, rect, pf): EncodedRect[] => {
  if (isEmpty(rect)) return [];
  return [{ rect: { ...rect }, encoding: ZLIB, pieces: [{ kind: 'zlib', stream: 0, framing: 'u32', bytes: rawBytes(frame, rect, pf) }] }];
};
