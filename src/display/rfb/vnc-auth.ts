// VNC authentication (RFB security type 2): a 16-byte random challenge that the
// client encrypts with DES-ECB, keyed by the password truncated or zero-padded
// to 8 bytes with every key byte bit-reversed (rfbproto: "the lowest bit of each
// byte is considered the first bit"). Node 20's OpenSSL 3 has no DES without the
// legacy provider, so DES (FIPS 46-3) is implemented here. Speed is irrelevant
// (two blocks per login), clarity is not: the code follows the standard's tables.
// VNC authentication is weak: offer it on loopback or inside TLS only.
import { randomBytes, timingSafeEqual } from 'node:crypto';

// FIPS 46-3 tables; entries are 1-based bit positions, bit 1 = most significant bit of byte 0.
const IP = [
  58, 50, 42, 34, 26, 18, 10, 2, 60, 52, 44, 36, 28, 20, 12, 4, 62, 54, 46, 38, 30, 22, 14, 6, 64, 56, 48, 40, 32, 24, 16, 8, 57, 49, 41, 33, 25, 17, 9, 1, 59,
  51, 43, 35, 27, 19, 11, 3, 61, 53, 45, 37, 29, 21, 13, 5, 63, 55, 47, 39, 31, 23, 15, 7,
];

const E = [
  32, 1, 2, 3, 4, 5, 4, 5, 6, 7, 8, 9, 8, 9, 10, 11, 12, 13, 12, 13, 14, 15, 16, 17, 16, 17, 18, 19, 20, 21, 20, 21, 22, 23, 24, 25, 24, 25, 26, 27, 28, 29, 28,
  29, 30, 31, 32, 1,
];

const P = [16, 7, 20, 21, 29, 12, 28, 17, 1, 15, 23, 26, 5, 18, 31, 10, 2, 8, 24, 14, 32, 27, 3, 9, 19, 13, 30, 6, 22, 11, 4, 25];

const PC1 = [
  57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60, 52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30,
  22, 14, 6, 61, 53, 45, 37, 29, 21, 13, 5, 28, 20, 12, 4,
];

const PC2 = [
  14, 17, 11, 24, 1, 5, 3, 28, 15, 6, 21, 10, 23, 19, 12, 4, 26, 8, 16, 7, 27, 20, 13, 2, 41, 52, 31, 37, 47, 55, 30, 40, 51, 45, 33, 48, 44, 49, 39, 56, 34,
  53, 46, 42, 50, 36, 29, 32,
];

const SHIFTS = [1, 1, 2, 2, 2, 2, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1];

// S-boxes: 4 rows of 16, row = outer bits (1 and 6), column = inner bits (2–5).
const S = [
  [
    14, 4, 13, 1, 2, 15, 11, 8, 3, 10, 6, 12, 5, 9, 0, 7, 0, 15, 7, 4, 14, 2, 13, 1, 10, 6, 12, 11, 9, 5, 3, 8, 4, 1, 14, 8, 13, 6, 2, 11, 15, 12, 9, 7, 3, 10,
    5, 0, 15, 12, 8, 2, 4, 9, 1, 7, 5, 11, 3, 14, 10, 0, 6, 13,
  ],
  [
    15, 1, 8, 14, 6, 11, 3, 4, 9, 7, 2, 13, 12, 0, 5, 10, 3, 13, 4, 7, 15, 2, 8, 14, 12, 0, 1, 10, 6, 9, 11, 5, 0, 14, 7, 11, 10, 4, 13, 1, 5, 8, 12, 6, 9, 3,
    2, 15, 13, 8, 10, 1, 3, 15, 4, 2, 11, 6, 7, 12, 0, 5, 14, 9,
  ],
  [
    10, 0, 9, 14, 6, 3, 15, 5, 1, 13, 12, 7, 11, 4, 2, 8, 13, 7, 0, 9, 3, 4, 6, 10, 2, 8, 5, 14, 12, 11, 15, 1, 13, 6, 4, 9, 8, 15, 3, 0, 11, 1, 2, 12, 5, 10,
    14, 7, 1, 10, 13, 0, 6, 9, 8, 7, 4, 15, 14, 3, 11, 5, 2, 12,
  ],
  [
    7, 13, 14, 3, 0, 6, 9, 10, 1, 2, 8, 5, 11, 12, 4, 15, 13, 8, 11, 5, 6, 15, 0, 3, 4, 7, 2, 12, 1, 10, 14, 9, 10, 6, 9, 0, 12, 11, 7, 13, 15, 1, 3, 14, 5, 2,
    8, 4, 3, 15, 0, 6, 10, 1, 13, 8, 9, 4, 5, 11, 12, 7, 2, 14,
  ],
  [
    2, 12, 4, 1, 7, 10, 11, 6, 8, 5, 3, 15, 13, 0, 14, 9, 14, 11, 2, 12, 4, 7, 13, 1, 5, 0, 15, 10, 3, 9, 8, 6, 4, 2, 1, 11, 10, 13, 7, 8, 15, 9, 12, 5, 6, 3,
    0, 14, 11, 8, 12, 7, 1, 14, 2, 13, 6, 15, 0, 9, 10, 4, 5, 3,
  ],
  [
    12, 1, 10, 15, 9, 2, 6, 8, 0, 13, 3, 4, 14, 7, 5, 11, 10, 15, 4, 2, 7, 12, 9, 5, 6, 1, 13, 14, 0, 11, 3, 8, 9, 14, 15, 5, 2, 8, 12, 3, 7, 0, 4, 10, 1, 13,
    11, 6, 4, 3, 2, 12, 9, 5, 15, 10, 11, 14, 1, 7, 6, 0, 8, 13,
  ],
  [
    4, 11, 2, 14, 15, 0, 8, 13, 3, 12, 9, 7, 5, 10, 6, 1, 13, 0, 11, 7, 4, 9, 1, 10, 14, 3, 5, 12, 2, 15, 8, 6, 1, 4, 11, 13, 12, 3, 7, 14, 10, 15, 6, 8, 0, 5,
    9, 2, 6, 11, 13, 8, 1, 4, 10, 7, 9, 5, 0, 15, 14, 2, 3, 12,
  ],
  [
    13, 2, 8, 4, 6, 15, 11, 1, 10, 9, 3, 14, 5, 0, 12, 7, 1, 15, 13, 8, 10, 3, 7, 4, 12, 5, 6, 11, 0, 14, 9, 2, 7, 11, 4, 1, 9, 12, 14, 2, 0, 6, 10, 13, 15, 3,
    5, 8, 2, 1, 14, 7, 4, 10, 8, 13, 15, 12, 9, 0, 3, 5, 6, 11,
  ],
];

/** Final permutation IP⁻¹. */
const FP: number[] = new Array(64);
for (let i = 0; i < 64; i++) FP[IP[i]! - 1] = i + 1;

/** Bits of `bytes` as 0/1 values, most significant bit of byte 0 first. */
function toBits(bytes: Uint8Array, n: number): Uint8Array {
  const bits = new Uint8Array(n);
  for (let i = 0; i < n; i++) bits[i] = ((bytes[i >> 3] as number) >> (7 - (i & 7))) & 1;
  return bits;
}

function fromBits(bits: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(bits.length >> 3);
  for (let i = 0; i < bits.length; i++) bytes[i >> 3]! |= (bits[i] as number) << (7 - (i & 7));
  return bytes;
}

function permute(table: readonly number[], input: Uint8Array): Uint8Array {
  const out = new Uint8Array(table.length);
  for (let i = 0; i < table.length; i++) out[i] = input[(table[i] as number) - 1] as number;
  return out;
}

function rotateLeft(half: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(half.length);
  for (let i = 0; i < half.length; i++) out[i] = half[(i + n) % half.length] as number;
  return out;
}

/** The 16 round keys (48 bits each) of an 8-byte DES key (parity bits ignored). */
function keySchedule(key: Uint8Array): Uint8Array[] {
  const cd = permute(PC1, toBits(key, 64));
  let c = cd.subarray(0, 28);
  let d = cd.subarray(28, 56);
  const keys: Uint8Array[] = [];
  for (const s of SHIFTS) {
    c = rotateLeft(c, s);
    d = rotateLeft(d, s);
    const joined = new Uint8Array(56);
    joined.set(c, 0);
    joined.set(d, 28);
    keys.push(permute(PC2, joined));
  }
  return keys;
}

function feistel(r: Uint8Array, k: Uint8Array): Uint8Array {
  const e = permute(E, r);
  for (let i = 0; i < 48; i++) e[i]! ^= k[i] as number;
  const out = new Uint8Array(32);
  for (let s = 0; s < 8; s++) {
    const b = e.subarray(s * 6, s * 6 + 6);
    const row = ((b[0] as number) << 1) | (b[5] as number);
    const col = ((b[1] as number) << 3) | ((b[2] as number) << 2) | ((b[3] as number) << 1) | (b[4] as number);
    const v = (S[s] as number[])[row * 16 + col] as number;
    for (let j = 0; j < 4; j++) out[s * 4 + j] = (v >> (3 - j)) & 1;
  }
  return permute(P, out);
}

function cryptBlock(keys: Uint8Array[], block: Uint8Array): Uint8Array {
  const b = permute(IP, toBits(block, 64));
  let l: Uint8Array = b.slice(0, 32);
  let r: Uint8Array = b.slice(32, 64);
  for (const k of keys) {
    const f = feistel(r, k);
    for (let i = 0; i < 32; i++) f[i]! ^= l[i] as number;
    l = r;
    r = f;
  }
  const pre = new Uint8Array(64);
  pre.set(r, 0);
  pre.set(l, 32);
  return fromBits(permute(FP, pre));
}

/** DES-encrypts one 8-byte block with an 8-byte key (standard bit order). */
export function desEncryptBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  if (key.length !== 8 || block.length !== 8) throw new RangeError('DES needs an 8-byte key and an 8-byte block');
  return cryptBlock(keySchedule(key), block);
}

/** DES-decrypts one 8-byte block (round keys in reverse order). */
export function desDecryptBlock(key: Uint8Array, block: Uint8Array): Uint8Array {
  if (key.length !== 8 || block.length !== 8) throw new RangeError('DES needs an 8-byte key and an 8-byte block');
  return cryptBlock(keySchedule(key).reverse(), block);
}

function reverseBits(b: number): number {
  let r = 0;
  for (let i = 0; i < 8; i++) r |= ((b >> i) & 1) << (7 - i);
  return r;
}

/** The DES key VNC derives from a password: its UTF-8 bytes truncated/zero-padded to 8, each bit-reversed. */
export function vncKey(password: string): Uint8Array {
  const pw = Buffer.from(password, 'utf8');
  const key = new Uint8Array(8);
  for (let i = 0; i < 8 && i < pw.length; i++) key[i] = reverseBits(pw[i] as number);
  return key;
}

/** A fresh 16-byte random challenge. */
export function makeChallenge(): Uint8Array {
  return new Uint8Array(randomBytes(16));
}

/** The client's answer to `challenge` (both 8-byte halves encrypted independently, ECB). */
export function respond(password: string, challenge: Uint8Array): Uint8Array {
  if (challenge.length !== 16) throw new RangeError('VNC challenge must be 16 bytes');
  const keys = keySchedule(vncKey(password));
  const out = new Uint8Array(16);
  out.set(cryptBlock(keys, challenge.subarray(0, 8)), 0);
  out.set(cryptBlock(keys, challenge.subarray(8, 16)), 8);
  return out;
}

/** True if `response` is the right answer to `challenge` for `password` (constant-time comparison). */
export function checkResponse(password: string, challenge: Uint8Array, response: Uint8Array): boolean {
  if (challenge.length !== 16 || response.length !== 16) return false;
  return timingSafeEqual(respond(password, challenge), response);
}
