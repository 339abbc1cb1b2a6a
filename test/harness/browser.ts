// noVNC in headless Chromium (Debian's `chromium`, installed by scripts/test-clients.sh) driven by
// playwright-core, which downloads no browser.
//
// Page contract (our daemon's viewer page and the test pages follow it): the page creates a noVNC RFB object
// as `window.rfb` and keeps `window.state` up to date: 'connecting' → 'connected' on the RFB 'connect' event;
// 'disconnected' on 'disconnect', 'securityfailure' on 'securityfailure', 'credentialsrequired' on
// 'credentialsrequired' (terminal states; optional details in `window.stateDetail`).

import { existsSync } from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';
import type { Capture } from './vnc-clients.js';

/** Debian's chromium (a wrapper script around /usr/lib/chromium/chromium); override with CHROMIUM_PATH. */
export function chromiumPath(): string {
  return process.env.CHROMIUM_PATH || '/usr/bin/chromium';
}

export function chromiumAvailable(): boolean {
  return existsSync(chromiumPath());
}

/**
 * Flags for Debian's chromium as a test client. playwright adds --headless itself (headless: true) and
 * always starts with a fresh temporary --user-data-dir (passing one in `args` is refused), removed on close.
 */
export const CHROMIUM_ARGS = [
  '--no-sandbox', // root in CI containers
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--force-color-profile=srgb', // canvas pixels exactly as drawn
];

export function launchChromium(opts: { timeoutMs?: number } = {}): Promise<Browser> {
  return chromium.launch({ executablePath: chromiumPath(), headless: true, args: CHROMIUM_ARGS, timeout: opts.timeoutMs ?? 30_000 });
}

export interface NoVncOptions {
  /** connect timeout (until window.state === 'connected'); default 15000 */
  timeoutMs?: number;
  /** false: return as soon as the page has loaded (e.g. to test a failing connection with waitForState) */
  waitConnected?: boolean;
  /** browser viewport; default 1280x1024 */
  viewport?: { width: number; height: number };
  /** reuse a browser (it is not closed by close()) */
  browser?: Browser;
}

export interface NoVncSession {
  readonly browser: Browser;
  readonly page: Page;
  /** the noVNC framebuffer (rfb.getImageData()) as packed RGB */
  canvasRgb(): Promise<Capture>;
  /** rfb.toDataURL('image/png') as PNG bytes */
  canvasPng(): Promise<Buffer>;
  /** window.state */
  state(): Promise<string>;
  /** waits until window.state is one of `states`; returns it */
  waitForState(states: string | string[], timeoutMs?: number): Promise<string>;
  /** browser console messages and page errors so far */
  console(): string[];
  close(): Promise<void>;
}

const TERMINAL = ['disconnected', 'securityfailure', 'credentialsrequired'];

// In-page code is passed as strings: the project compiles without DOM types.
const READ_RGB = `(() => {
  const rfb = window.rfb;
  if (!rfb) throw new Error('window.rfb is not set');
  const img = rfb.getImageData();
  const { width, height, data } = img;
  const rgb = new Uint8Array(width * height * 3);
  for (let i = 0, j = 0; i < data.length; i += 4, j += 3) { rgb[j] = data[i]; rgb[j + 1] = data[i + 1]; rgb[j + 2] = data[i + 2]; }
  let s = '';
  for (let i = 0; i < rgb.length; i += 0x8000) s += String.fromCharCode.apply(null, rgb.subarray(i, i + 0x8000));
  return { width, height, b64: btoa(s) };
})()`;

/**
 * Opens `url` (a page following the contract above) in headless Chromium and waits for the RFB connection.
 * Rejects with the page state and console output if the connection ends in a terminal state or times out.
 */
export async function openNoVnc(url: string, opts: NoVncOptions = {}): Promise<NoVncSession> {
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const own = !opts.browser;
  const browser = opts.browser ?? (await launchChromium({ timeoutMs }));
  const logs: string[] = [];
  let page: Page | undefined;
  const close = async () => {
    if (own) await browser.close().catch(() => {});
    else await page?.close().catch(() => {});
  };
  try {
    page = await browser.newPage({ viewport: opts.viewport ?? { width: 1280, height: 1024 } });
    const pg = page;
    pg.on('console', (m) => logs.push(`[${m.type()}] ${m.text()}`));
    pg.on('pageerror', (e) => logs.push(`[pageerror] ${e.message}`));
    await pg.goto(url, { timeout: timeoutMs });
    const state = async () => String(await pg.evaluate('window.state'));
    const waitForState = async (want: string | string[], ms = timeoutMs) => {
      const wanted = Array.isArray(want) ? want : [want];
      const t0 = Date.now();
      for (;;) {
        const s = await state();
        if (wanted.includes(s)) return s;
        if (TERMINAL.includes(s) || Date.now() - t0 > ms) {
          const detail = await pg.evaluate('window.stateDetail').catch(() => undefined);
          throw new Error(
            `noVNC state is '${s}'${detail === undefined ? '' : ` (${JSON.stringify(detail)})`}, wanted ${wanted.join('|')}` +
              `${Date.now() - t0 > ms ? ` after ${ms} ms` : ''}; console:\n${logs.slice(-20).join('\n')}`,
          );
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    if (opts.waitConnected !== false) await waitForState('connected');
    return {
      browser,
      page: pg,
      async canvasRgb() {
        const r = (await pg.evaluate(READ_RGB)) as { width: number; height: number; b64: string };
        const rgb = Buffer.from(r.b64, 'base64');
        return { width: r.width, height: r.height, rgb: new Uint8Array(rgb.buffer, rgb.byteOffset, rgb.byteLength) };
      },
      async canvasPng() {
        const u = String(await pg.evaluate(`window.rfb.toDataURL('image/png')`));
        return Buffer.from(u.slice(u.indexOf(',') + 1), 'base64');
      },
      state,
      waitForState,
      console: () => [...logs],
      close,
    };
  } catch (e) {
    await close();
    throw e;
  }
}
