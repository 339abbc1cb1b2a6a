// Glue for the RFB encoder tests: encode → finish through a client's zlib
// streams → decode with the reference client, and compare pixel values.
import assert from 'node:assert/strict';
import type { EncodeOptions, Encoder, Frame, PixelFormat, Rect } from '../../src/display/rfb/types.js';
import { finishRect, type ZlibStreams } from '../../src/display/rfb/zlib-streams.js';
import { type Client, expectedPixels } from './decoders.js';

export function concat(parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

export interface Sent {
  rects: number;
  /** Payload bytes plus 12 bytes of header per rectangle. */
  bytes: number;
}

/** Encodes `rect` of `frame`, sends it through `streams` and applies it to `client`. */
export async function send(
  enc: Encoder,
  frame: Frame,
  rect: Rect,
  pf: PixelFormat,
  streams: ZlibStreams,
  client: Client,
  opts: EncodeOptions = { compressLevel: 2 },
): Promise<Sent> {
  const rects = enc(frame, rect, pf, opts);
  let bytes = 0;
  for (const er of rects) {
    const payload = concat(await finishRect(er, streams));
    bytes += 12 + payload.length;
    await client.apply(er.rect, er.encoding, payload);
  }
  return { rects: rects.length, bytes };
}

/** Asserts the client shows exactly `rect` of `frame` converted to its format, each pixel written once. */
export function assertShows(client: Client, frame: Frame, rect: Rect, pf: PixelFormat, what: string): void {
  const want = expectedPixels(frame, rect, pf);
  const got = client.region(rect);
  for (let i = 0; i < want.length; i++)
    if (got[i] !== want[i]) {
      const x = rect.x + (i % rect.w);
      const y = rect.y + Math.floor(i / rect.w);
      assert.fail(`${what}: pixel (${x},${y}) is 0x${got[i]!.toString(16)}, want 0x${want[i]!.toString(16)}`);
    }
  for (let y = 0; y < client.height; y++)
    for (let x = 0; x < client.width; x++) {
      const inside = x >= rect.x && x < rect.x + rect.w && y >= rect.y && y < rect.y + rect.h;
      const c = client.coverage[y * client.width + x]!;
      if (c !== (inside ? 1 : 0)) assert.fail(`${what}: pixel (${x},${y}) written ${c} times`);
    }
}
