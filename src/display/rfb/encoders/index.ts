// Encoding numbers (rfbproto) and the frame encoders we implement.
import type { Encoder } from '../types.js';
import { encodeHextile } from './hextile.js';
import { encodeRaw } from './raw.js';
import { encodeTight } from './tight.js';
import { encodeZlib } from './zlib.js';
import { encodeZrle } from './zrle.js';

export { copyRect } from './copyrect.js';
export { encodeHextile } from './hextile.js';
export { encodeRaw, rawBytes } from './raw.js';
export { compactLength, encodeTight, makeTightEncoder, TIGHT_MAX_WIDTH, type TightEncoderOptions, type TightLossyHook } from './tight.js';
export { encodeZlib } from './zlib.js';
export { encodeZrle } from './zrle.js';

export const ENCODINGS = {
  RAW: 0,
  COPY_RECT: 1,
  RRE: 2,
  HEXTILE: 5,
  ZLIB: 6,
  TIGHT: 7,
  ZRLE: 16,
  // Pseudo-encodings.
  DESKTOP_SIZE: -223,
  LAST_RECT: -224,
  CURSOR: -239,
  QEMU_POINTER_MOTION_CHANGE: -257,
  QEMU_EXTENDED_KEY_EVENT: -258,
  TIGHT_PNG: -260,
  QEMU_LED_STATE: -261,
  DESKTOP_NAME: -307,
  EXTENDED_DESKTOP_SIZE: -308,
  XVP: -309,
  FENCE: -312,
  CONTINUOUS_UPDATES: -313,
  CURSOR_WITH_ALPHA: -314,
  EXTENDED_MOUSE_BUTTONS: -316,
  TIGHT_WITHOUT_ZLIB: -317,
  /** Compression level 0 … 9 are −256 … −247. */
  COMPRESS_LEVEL_0: -256,
  COMPRESS_LEVEL_9: -247,
  /** JPEG quality level 0 … 9 are −32 … −23. */
  QUALITY_LEVEL_0: -32,
  QUALITY_LEVEL_9: -23,
  /** 0xc0a1e5ce as a signed 32-bit value. */
  EXTENDED_CLIPBOARD: 0xc0a1e5ce | 0,
  VMWARE_CURSOR: 0x574d5664,
} as const;

/** The compression level (0–9) a pseudo-encoding asks for, or null if it is not one. */
export function compressLevelOf(encoding: number): number | null {
  return encoding >= ENCODINGS.COMPRESS_LEVEL_0 && encoding <= ENCODINGS.COMPRESS_LEVEL_9 ? encoding - ENCODINGS.COMPRESS_LEVEL_0 : null;
}

/** The JPEG quality level (0–9) a pseudo-encoding asks for, or null if it is not one. */
export function qualityLevelOf(encoding: number): number | null {
  return encoding >= ENCODINGS.QUALITY_LEVEL_0 && encoding <= ENCODINGS.QUALITY_LEVEL_9 ? encoding - ENCODINGS.QUALITY_LEVEL_0 : null;
}

/** The frame encoder for `encoding`, or null (CopyRect, pseudo-encodings and encodings we do not implement). */
export function encoderFor(encoding: number): Encoder | null {
  switch (encoding) {
    case ENCODINGS.RAW:
      return encodeRaw;
    case ENCODINGS.HEXTILE:
      return encodeHextile;
    case ENCODINGS.ZLIB:
      return encodeZlib;
    case ENCODINGS.TIGHT:
      return encodeTight;
    case ENCODINGS.ZRLE:
      return encodeZrle;
    default:
      return null;
  }
}
