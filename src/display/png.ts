// A PNG encoder without dependencies: 8-bit RGB, filter "none" (fast and
// lossless), zlib from Node, CRCs from zlib.crc32.
import { constants, crc32, deflateSync } from 'node:zlib';
import { rowToRgb } from './convert.js';
import type { PlaneInfo } from './plane.js';

function chunk(type: string, data: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  out.set(data, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)) >>> 0, 8 + data.length);
  return out;
}

/** Encodes packed RGB rows (width × 3 bytes each) as a PNG. */
export function encodePngRgb(width: number, height: number, rgb: Uint8Array, level = 3): Buffer {
  const raw = Buffer.alloc(height * (1 + width * 3));
  for (let y = 0; y < height; y++) {
    const at = y * (1 + width * 3);
    raw[at] = 0; // filter: none
    raw.set(rgb.subarray(y * width * 3, (y + 1) * width * 3), at + 1);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw, { level, strategy: constants.Z_DEFAULT_STRATEGY })),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

/** Converts a plane (in `fb`, the device's framebuffer memory) to packed RGB. */
export function planeToRgb(plane: PlaneInfo, fb: Uint8Array): Uint8Array {
  const rgb = new Uint8Array(plane.width * plane.height * 3);
  for (let y = 0; y < plane.height; y++) rowToRgb(plane.drm_format, fb, plane.offset + y * plane.stride, plane.width, rgb, y * plane.width * 3);
  return rgb;
}

export function planeToPng(plane: PlaneInfo, fb: Uint8Array, level = 3): Buffer {
  return encodePngRgb(plane.width, plane.height, planeToRgb(plane, fb), level);
}
