// Shared shapes of the RFB encoding pipeline: the canonical frame every encoder
// reads, the client's pixel format, and encoded rectangles made of pieces that
// are either final bytes or bytes still to go through one of the client's
// persistent zlib streams (see zlib-streams.ts).

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

/** Canonical frame every encoder reads: 32-bit pixels 0x00RRGGBB, row-major, stride = width. */
export interface Frame {
  width: number;
  height: number;
  pixels: Uint32Array;
}

/** The RFB PIXEL_FORMAT structure (true colour only; colour maps are refused). */
export interface PixelFormat {
  bitsPerPixel: 8 | 16 | 32;
  depth: number;
  bigEndian: boolean;
  trueColour: boolean;
  redMax: number;
  greenMax: number;
  blueMax: number;
  redShift: number;
  greenShift: number;
  blueShift: number;
}

/**
 * A piece of an encoded rectangle's payload. 'zlib' pieces are compressed by the CLIENT's
 * persistent zlib stream `stream` (0 for ZRLE and zlib, 0..3 for Tight) with Z_SYNC_FLUSH when
 * the session sends them; framing says how the compressed length is written: 'u32' (ZRLE, zlib:
 * U32 big-endian length), 'compact' (Tight: 1–3 byte compact length; and if the UNCOMPRESSED
 * bytes are < 12 they are sent raw with no length and not compressed).
 */
export type Piece = { kind: 'raw'; bytes: Uint8Array } | { kind: 'zlib'; stream: number; framing: 'u32' | 'compact'; bytes: Uint8Array };

export interface EncodedRect {
  rect: Rect;
  encoding: number;
  pieces: Piece[];
}

export interface EncodeOptions {
  /** 0-9 from the client's compression-level pseudo-encoding, default 2. */
  compressLevel: number;
  /**
   * 0-9 from the client's JPEG-quality pseudo-encoding, if it sent one. Encoders ignore it
   * unless a lossy mode was explicitly installed (see makeTightEncoder); the default is lossless.
   */
  quality?: number;
}

/** Pure and synchronous: one encoding of a frame can be shared by all viewers with the same pixel format. */
export type Encoder = (frame: Frame, rect: Rect, pf: PixelFormat, opts: EncodeOptions) => EncodedRect[];
