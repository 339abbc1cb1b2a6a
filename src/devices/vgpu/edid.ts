// EDID 1.4 base block for a virtual monitor: the preferred mode as a detailed
// timing (CVT reduced blanking), the common VESA modes up to the maximum as
// standard timings, a range-limits and a name descriptor. The bochs driver
// builds its mode list from this.

export interface EdidOptions {
  /** Preferred (native) mode. */
  width: number;
  height: number;
  /** Largest mode offered. */
  maxWidth: number;
  maxHeight: number;
  name?: string;
  serial?: number;
}

const STANDARD_MODES: [number, number][] = [
  [640, 480],
  [800, 600],
  [1024, 768],
  [1280, 720],
  [1280, 800],
  [1280, 1024],
  [1440, 900],
  [1600, 900],
  [1600, 1200],
  [1680, 1050],
  [1920, 1080],
  [1920, 1200],
  [2560, 1440],
  [2560, 1600],
];

/** Aspect ratio code of an EDID standard timing, or -1 if none fits. */
function aspectCode(w: number, h: number): number {
  if (w * 10 === h * 16) return 0; // 16:10
  if (w * 3 === h * 4) return 1; // 4:3
  if (w * 4 === h * 5) return 2; // 5:4
  if (w * 9 === h * 16) return 3; // 16:9
  return -1;
}

/** A detailed timing descriptor at 60 Hz using CVT reduced-blanking timings. */
function detailedTiming(w: number, h: number): Uint8Array {
  const hBlank = 160;
  const hFront = 48;
  const hSync = 32;
  const vFront = 3;
  const vSync = 6;
  const hPeriodUs = (1e6 / 60 - 460) / h;
  const vBlank = Math.max(vFront + vSync + 6, Math.ceil(460 / hPeriodUs) + 1);
  const hTotal = w + hBlank;
  const vTotal = h + vBlank;
  const clock10k = Math.floor((hTotal * vTotal * 60) / 10_000 / 25) * 25; // 0.25 MHz steps, in 10 kHz units
  const d = new Uint8Array(18);
  d[0] = clock10k & 0xff;
  d[1] = clock10k >> 8;
  d[2] = w & 0xff;
  d[3] = hBlank & 0xff;
  d[4] = ((w >> 8) << 4) | (hBlank >> 8);
  d[5] = h & 0xff;
  d[6] = vBlank & 0xff;
  d[7] = ((h >> 8) << 4) | (vBlank >> 8);
  d[8] = hFront & 0xff;
  d[9] = hSync & 0xff;
  d[10] = ((vFront & 0xf) << 4) | (vSync & 0xf);
  d[11] = ((hFront >> 8) << 6) | ((hSync >> 8) << 4) | ((vFront >> 4) << 2) | (vSync >> 4);
  // Image size in mm at ~96 dpi.
  const wmm = Math.round((w * 25.4) / 96);
  const hmm = Math.round((h * 25.4) / 96);
  d[12] = wmm & 0xff;
  d[13] = hmm & 0xff;
  d[14] = ((wmm >> 8) << 4) | (hmm >> 8);
  d[17] = 0x18 | 0x02; // digital separate sync, +hsync -vsync (CVT-RB)
  return d;
}

function textDescriptor(tag: number, text: string): Uint8Array {
  const d = new Uint8Array(18);
  d[3] = tag;
  const t = `${text.slice(0, 13)}\n`.padEnd(13, ' ');
  for (let i = 0; i < 13; i++) d[5 + i] = t.charCodeAt(i) & 0x7f;
  return d;
}

export function generateEdid(o: EdidOptions): Uint8Array {
  if (o.width < 64 || o.height < 64 || o.width > 4095 || o.height > 4095) throw new RangeError(`preferred mode ${o.width}x${o.height} cannot be described`);
  const e = new Uint8Array(128);
  e.set([0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00], 0);
  // Manufacturer "MED" (three 5-bit letters, big-endian).
  const m = (('M'.charCodeAt(0) - 64) << 10) | (('E'.charCodeAt(0) - 64) << 5) | ('D'.charCodeAt(0) - 64);
  e[8] = m >> 8;
  e[9] = m & 0xff;
  e[10] = 0x01; // product code
  e[11] = 0x00;
  const serial = o.serial ?? 1;
  e[12] = serial & 0xff;
  e[13] = (serial >> 8) & 0xff;
  e[14] = (serial >> 16) & 0xff;
  e[15] = (serial >>> 24) & 0xff;
  e[16] = 1; // week
  e[17] = 2026 - 1990; // year
  e[18] = 1; // EDID 1.4
  e[19] = 4;
  e[20] = 0xa5; // digital, 8 bits per colour, DisplayPort
  e[21] = Math.round((o.width * 25.4) / 96 / 10); // cm
  e[22] = Math.round((o.height * 25.4) / 96 / 10);
  e[23] = 120; // gamma 2.2
  e[24] = 0x06; // RGB colour, sRGB default, preferred timing is native
  // sRGB chromaticity.
  e.set([0xee, 0x91, 0xa3, 0x54, 0x4c, 0x99, 0x26, 0x0f, 0x50, 0x54], 25);
  // Established timings: 640x480@60, 800x600@60, 1024x768@60 when allowed.
  e[35] = o.maxWidth >= 640 && o.maxHeight >= 480 ? 0x20 : 0;
  e[36] = (o.maxWidth >= 800 && o.maxHeight >= 600 ? 0x01 : 0) | (o.maxWidth >= 1024 && o.maxHeight >= 768 ? 0x08 : 0);
  e[37] = 0;
  // Standard timings: up to eight modes within the maximum.
  const std = STANDARD_MODES.filter(
    ([w, h]) => w <= 2288 && w <= o.maxWidth && h <= o.maxHeight && aspectCode(w, h) >= 0 && !(w === o.width && h === o.height),
  ).slice(-8);
  for (let i = 0; i < 8; i++) {
    const s = std[i];
    if (s) {
      e[38 + 2 * i] = s[0] / 8 - 31;
      e[39 + 2 * i] = (aspectCode(s[0], s[1]) << 6) | 0; // 60 Hz
    } else {
      e[38 + 2 * i] = 0x01;
      e[39 + 2 * i] = 0x01;
    }
  }
  e.set(detailedTiming(o.width, o.height), 54);
  // Range limits: 50-70 Hz vertical, 30-160 kHz horizontal, 600 MHz max clock, no extended timing info.
  const r = new Uint8Array(18);
  r.set([0, 0, 0, 0xfd, 0, 50, 70, 30, 160, 60, 0x01, 0x0a, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20]);
  e.set(r, 72);
  e.set(textDescriptor(0xfc, o.name ?? 'mediated vGPU'), 90);
  e.set(textDescriptor(0xff, `MED${serial}`), 108);
  e[126] = 0; // no extensions
  let sum = 0;
  for (let i = 0; i < 127; i++) sum += e[i] as number;
  e[127] = (256 - (sum & 0xff)) & 0xff;
  return e;
}
