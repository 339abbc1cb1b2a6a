// A small PNG reader for tests (8-bit RGB/RGBA, all five row filters), so the
// PNGs our screenshot writes can be compared pixel by pixel.
import { inflateSync } from 'node:zlib';

export interface DecodedPng {
  width: number;
  height: number;
  /** Packed RGB, 3 bytes per pixel. */
  rgb: Uint8Array;
}

export function decodePng(png: Uint8Array): DecodedPng {
  const b = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (b.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG');
  let at = 8;
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  while (at < b.length) {
    const len = b.readUInt32BE(at);
    const type = b.toString('latin1', at + 4, at + 8);
    const data = b.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8) throw new Error('only 8-bit PNGs');
      channels = data[9] === 2 ? 3 : data[9] === 6 ? 4 : 0;
      if (!channels) throw new Error(`colour type ${data[9]} unsupported`);
    } else if (type === 'IDAT') idat.push(data);
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const cur = new Uint8Array(stride);
  const prev = new Uint8Array(stride);
  const rgb = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (stride + 1)] as number;
    const row = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let i = 0; i < stride; i++) {
      const a = i >= channels ? (cur[i - channels] as number) : 0;
      const up = prev[i] as number;
      const c = i >= channels ? (prev[i - channels] as number) : 0;
      let pred = 0;
      if (f === 1) pred = a;
      else if (f === 2) pred = up;
      else if (f === 3) pred = (a + up) >> 1;
      else if (f === 4) {
        const p = a + up - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - up);
        const pc = Math.abs(p - c);
        pred = pa <= pb && pa <= pc ? a : pb <= pc ? up : c;
      }
      cur[i] = ((row[i] as number) + pred) & 0xff;
    }
    for (let x = 0; x < width; x++) {
      rgb[(y * width + x) * 3] = cur[x * channels] as number;
      rgb[(y * width + x) * 3 + 1] = cur[x * channels + 1] as number;
      rgb[(y * width + x) * 3 + 2] = cur[x * channels + 2] as number;
    }
    prev.set(cur);
  }
  return { width, height, rgb };
}
