// Incremental parser of what an RFB client sends after the handshake. Every
// length is checked against a limit before anything is allocated for it.

import { parsePixelFormat } from './pixel-format.js';
import type { PixelFormat } from './types.js';

export const ClientMsg = {
  SET_PIXEL_FORMAT: 0,
  SET_ENCODINGS: 2,
  FRAMEBUFFER_UPDATE_REQUEST: 3,
  KEY_EVENT: 4,
  POINTER_EVENT: 5,
  CLIENT_CUT_TEXT: 6,
  ENABLE_CONTINUOUS_UPDATES: 150,
  CLIENT_FENCE: 248,
  SET_DESKTOP_SIZE: 251,
  QEMU: 255,
} as const;

export const MAX_ENCODINGS = 1024;
export const MAX_CUT_TEXT = 1 << 20;
export const MAX_SCREENS = 16;

export type ClientMessage =
  | { type: 'set-pixel-format'; format: PixelFormat }
  | { type: 'set-encodings'; encodings: number[] }
  | { type: 'update-request'; incremental: boolean; x: number; y: number; w: number; h: number }
  | { type: 'key'; down: boolean; keysym: number }
  | { type: 'qemu-key'; down: boolean; keysym: number; keycode: number }
  | { type: 'pointer'; buttons: number; x: number; y: number }
  | { type: 'cut-text'; length: number; extended: boolean }
  | { type: 'continuous-updates'; enable: boolean; x: number; y: number; w: number; h: number }
  | { type: 'fence'; flags: number; payload: Uint8Array }
  | { type: 'set-desktop-size'; width: number; height: number; screens: number };

export class ProtocolError extends Error {}

/**
 * Parses one message from `buf[at…end)`. Returns the message and the bytes it
 * used, or null when more bytes are needed. Throws ProtocolError on garbage.
 */
export function parseClientMessage(buf: Buffer, at: number, end: number): { msg: ClientMessage; used: number } | null {
  const avail = end - at;
  if (avail < 1) return null;
  const t = buf[at] as number;
  switch (t) {
    case ClientMsg.SET_PIXEL_FORMAT:
      if (avail < 20) return null;
      return { msg: { type: 'set-pixel-format', format: parsePixelFormat(buf, at + 4) }, used: 20 };
    case ClientMsg.SET_ENCODINGS: {
      if (avail < 4) return null;
      const n = buf.readUInt16BE(at + 2);
      if (n > MAX_ENCODINGS) throw new ProtocolError(`SetEncodings with ${n} encodings`);
      if (avail < 4 + 4 * n) return null;
      const encodings: number[] = [];
      for (let i = 0; i < n; i++) encodings.push(buf.readInt32BE(at + 4 + 4 * i));
      return { msg: { type: 'set-encodings', encodings }, used: 4 + 4 * n };
    }
    case ClientMsg.FRAMEBUFFER_UPDATE_REQUEST:
      if (avail < 10) return null;
      return {
        msg: {
          type: 'update-request',
          incremental: buf[at + 1] !== 0,
          x: buf.readUInt16BE(at + 2),
          y: buf.readUInt16BE(at + 4),
          w: buf.readUInt16BE(at + 6),
          h: buf.readUInt16BE(at + 8),
        },
        used: 10,
      };
    case ClientMsg.KEY_EVENT:
      if (avail < 8) return null;
      return { msg: { type: 'key', down: buf[at + 1] !== 0, keysym: buf.readUInt32BE(at + 4) }, used: 8 };
    case ClientMsg.POINTER_EVENT:
      if (avail < 6) return null;
      return { msg: { type: 'pointer', buttons: buf[at + 1] as number, x: buf.readUInt16BE(at + 2), y: buf.readUInt16BE(at + 4) }, used: 6 };
    case ClientMsg.CLIENT_CUT_TEXT: {
      if (avail < 8) return null;
      // A negative length announces the extended clipboard format; the payload is |length| bytes.
      const raw = buf.readInt32BE(at + 4);
      const length = Math.abs(raw);
      if (length > MAX_CUT_TEXT) throw new ProtocolError(`cut text of ${length} bytes exceeds ${MAX_CUT_TEXT}`);
      // The text itself is skipped by the caller (we keep no clipboard); report its size.
      return { msg: { type: 'cut-text', length, extended: raw < 0 }, used: 8 };
    }
    case ClientMsg.ENABLE_CONTINUOUS_UPDATES:
      if (avail < 10) return null;
      return {
        msg: {
          type: 'continuous-updates',
          enable: buf[at + 1] !== 0,
          x: buf.readUInt16BE(at + 2),
          y: buf.readUInt16BE(at + 4),
          w: buf.readUInt16BE(at + 6),
          h: buf.readUInt16BE(at + 8),
        },
        used: 10,
      };
    case ClientMsg.CLIENT_FENCE: {
      if (avail < 9) return null;
      const len = buf[at + 8] as number;
      if (len > 64) throw new ProtocolError(`fence payload of ${len} bytes`);
      if (avail < 9 + len) return null;
      return { msg: { type: 'fence', flags: buf.readUInt32BE(at + 4), payload: Uint8Array.prototype.slice.call(buf, at + 9, at + 9 + len) }, used: 9 + len };
    }
    case ClientMsg.SET_DESKTOP_SIZE: {
      if (avail < 8) return null;
      const screens = buf[at + 6] as number;
      if (screens > MAX_SCREENS) throw new ProtocolError(`SetDesktopSize with ${screens} screens`);
      if (avail < 8 + 16 * screens) return null;
      return { msg: { type: 'set-desktop-size', width: buf.readUInt16BE(at + 2), height: buf.readUInt16BE(at + 4), screens }, used: 8 + 16 * screens };
    }
    case ClientMsg.QEMU: {
      if (avail < 2) return null;
      const sub = buf[at + 1] as number;
      if (sub !== 0) throw new ProtocolError(`QEMU client message subtype ${sub} is not supported`);
      if (avail < 12) return null;
      return { msg: { type: 'qemu-key', down: buf.readUInt16BE(at + 2) !== 0, keysym: buf.readUInt32BE(at + 4), keycode: buf.readUInt32BE(at + 8) }, used: 12 };
    }
    default:
      // Without knowing its length we cannot skip an unknown message.
      throw new ProtocolError(`unknown client message type ${t}`);
  }
}
