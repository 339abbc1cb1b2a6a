// Proves the real-client harnesses (gvnccapture, TigerVNC on Xvfb, noVNC in headless Chromium) against QEMU's
// own VNC server: all show the same test picture pixel for pixel, follow a resize, authenticate with the right
// password and fail with a wrong one, and leave no processes, X servers or temp files behind.
// The clients come from scripts/test-clients.sh; QEMU from scripts/test-env.sh (or qemu-system-x86 on PATH).

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createRequire } from 'node:module';
import { connect, createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, normalize } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { chromiumAvailable, chromiumPath, launchChromium, openNoVnc } from './browser.js';
import type { Pattern } from './patterns.js';
import { decodePng } from './png-decode.js';
import {
  type Capture,
  comparePixels,
  findQemu,
  gvncCapture,
  missingPrograms,
  type QemuVnc,
  startQemuVnc,
  startTigerViewer,
  tigerCapture,
  VncClientError,
  waitForPixels,
} from './vnc-clients.js';

// --- skip decisions (after scripts/test-clients.sh everything is present) ---------------------------------
const hint = 'run `bash scripts/test-clients.sh` (as root) to install the VNC test clients';
const missGvnc = missingPrograms('gvnccapture');
const missTiger = missingPrograms('tigervnc');
const skipGvnc = missGvnc.length ? `gvnccapture harness unavailable: missing ${missGvnc.join(', ')}; ${hint}` : false;
const skipTiger = missTiger.length ? `TigerVNC harness unavailable: missing ${missTiger.join(', ')}; ${hint}` : false;
const skipBrowser = chromiumAvailable() ? false : `noVNC harness unavailable: no ${chromiumPath()}; ${hint}`;
const qemuBin = findQemu();
const skipAll = qemuBin ? false : 'no QEMU with the qtest accelerator to act as reference VNC server: run `bash scripts/test-env.sh`';

const novncRoot = dirname(dirname(createRequire(import.meta.url).resolve('@novnc/novnc'))); // …/core/rfb.js → package

// --- a tiny static server for noVNC pages (QEMU speaks WebSocket itself: no bridge needed) ---------------
const PAGE = `<!doctype html>
<meta charset="utf-8"><title>noVNC harness</title>
<div id="screen" style="width:1024px;height:768px"></div>
<script type="module">
import RFB from '/novnc/core/rfb.js';
const q = new URLSearchParams(location.search);
window.state = 'connecting';
const options = { shared: q.get('shared') !== '0' };
if (q.has('password')) options.credentials = { password: q.get('password') };
const rfb = new RFB(document.getElementById('screen'), q.get('ws'), options);
rfb.addEventListener('connect', () => { window.state = 'connected'; });
rfb.addEventListener('securityfailure', (e) => { window.state = 'securityfailure'; window.stateDetail = e.detail; });
rfb.addEventListener('credentialsrequired', () => { window.state = 'credentialsrequired'; });
rfb.addEventListener('disconnect', (e) => {
  if (window.state !== 'securityfailure') { window.state = 'disconnected'; window.stateDetail = e.detail; }
});
window.rfb = rfb;
</script>
`;

function startPageServer(): Promise<{ base: string; server: Server }> {
  const server = createHttpServer((req, res) => {
    const u = new URL(req.url ?? '/', 'http://x');
    if (u.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(PAGE);
    }
    if (u.pathname.startsWith('/novnc/')) {
      const rel = normalize(decodeURIComponent(u.pathname.slice('/novnc/'.length)));
      const file = join(novncRoot, rel);
      if (!rel.startsWith('..') && file.startsWith(novncRoot) && existsSync(file)) {
        const type = file.endsWith('.js') ? 'text/javascript' : file.endsWith('.json') ? 'application/json' : 'application/octet-stream';
        res.writeHead(200, { 'content-type': type });
        return res.end(readFileSync(file));
      }
    }
    res.writeHead(404).end();
  });
  return new Promise((res) => server.listen(0, '127.0.0.1', () => res({ base: `http://127.0.0.1:${(server.address() as { port: number }).port}/`, server })));
}

const pageUrl = (base: string, wsPort: number, extra: Record<string, string> = {}) =>
  `${base}?${new URLSearchParams({ ws: `ws://127.0.0.1:${wsPort}`, ...extra })}`;

// --- process / resource checks ---------------------------------------------------------------------------
/** pids of live processes in process group `pgid` (our harnesses start every client in its own group). */
function processGroup(pgid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(f[2]) === pgid && f[0] !== 'Z') out.push(Number(d));
    } catch {}
  }
  return out;
}
/** direct children of this process: pid → command name */
function ourChildren(): Map<number, string> {
  const m = new Map<number, string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
      if (Number(f[1]) === process.pid && f[0] !== 'Z') m.set(Number(d), st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')));
    } catch {}
  }
  return m;
}
const pidAlive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
async function eventually(check: () => boolean, ms = 3000): Promise<boolean> {
  const t0 = Date.now();
  while (!check()) {
    if (Date.now() - t0 > ms) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

const asCapture = (p: Pattern): Capture => ({ width: p.width, height: p.height, rgb: p.rgb });
function assertSame(got: Capture, want: Capture, what: string): void {
  const d = comparePixels(got, want);
  assert.equal(`${got.width}x${got.height}`, `${want.width}x${want.height}`, `${what}: size`);
  assert.equal(d.differing, 0, `${what}: ${d.differing} pixels differ (max delta ${d.maxDelta}), first ${JSON.stringify(d.first)}`);
}

describe('VNC client harnesses against QEMU’s VNC server', { skip: skipAll, timeout: 120_000 }, () => {
  const work = mkdtempSync(join(tmpdir(), 'mediated-vnc-clients-'));
  let qemu: QemuVnc;
  let pattern: Pattern;
  let pages: { base: string; server: Server };
  let browser: Browser | undefined;
  const png = (name: string) => join(work, `${name}.png`);

  before(async () => {
    const t0 = performance.now();
    qemu = await startQemuVnc({ websocket: true });
    pattern = await qemu.showPattern(640, 480, 7);
    pages = await startPageServer();
    if (!skipBrowser) browser = await launchChromium();
    console.log(`# setup: QEMU (${qemu.qemu}) + page server + chromium in ${Math.round(performance.now() - t0)} ms`);
  });
  after(async () => {
    await browser?.close();
    await qemu?.close();
    pages?.server.close();
    rmSync(work, { recursive: true, force: true });
  });

  let gvncPicture: Capture | undefined;

  test('gvnccapture: the picture QEMU shows, pixel-exact', { skip: skipGvnc }, async (t) => {
    const t0 = performance.now();
    // the first connection may race QEMU's first refresh of the new mode: poll until it shows up
    gvncPicture = await waitForPixels(() => gvncCapture('127.0.0.1', qemu.port, png('gvnc')), asCapture(pattern), 10_000);
    t.diagnostic(`first matching capture after ${Math.round(performance.now() - t0)} ms`);
    const t1 = performance.now();
    assertSame(await gvncCapture('127.0.0.1', qemu.port, png('gvnc2')), asCapture(pattern), 'second gvnccapture');
    t.diagnostic(`one gvnccapture: ${Math.round(performance.now() - t1)} ms`);
  });

  test('gvnccapture: ports below 5900 through a negative display number', { skip: skipGvnc }, async () => {
    // a TCP relay on a port < 5900 in front of QEMU
    let relay: TcpServer | undefined;
    let port = 0;
    for (let i = 0; i < 50 && !relay; i++) {
      const p = 5000 + Math.floor(Math.random() * 900);
      const s = createTcpServer((c) => {
        const up = connect(qemu.port, '127.0.0.1');
        c.pipe(up).pipe(c);
        c.on('error', () => up.destroy());
        up.on('error', () => c.destroy());
      });
      const ok = await new Promise<boolean>((res) => {
        s.once('error', () => res(false));
        s.listen(p, '127.0.0.1', () => res(true));
      });
      if (ok) {
        relay = s;
        port = p;
      }
    }
    assert.ok(relay, 'no free port below 5900');
    try {
      assertSame(await gvncCapture('127.0.0.1', port, png('gvnc-low')), asCapture(pattern), `gvnccapture via port ${port}`);
    } finally {
      relay.close();
    }
  });

  test('gvnccapture: a closed port is an error, not a hang', { skip: skipGvnc }, async () => {
    const s = createTcpServer();
    const port = await new Promise<number>((res) => s.listen(0, '127.0.0.1', () => res((s.address() as { port: number }).port)));
    await new Promise((r) => s.close(r));
    await assert.rejects(gvncCapture('127.0.0.1', port, png('refused'), { timeoutMs: 5000 }), VncClientError);
  });

  test('TigerVNC on Xvfb: the same picture, pixel-exact', { skip: skipTiger }, async (t) => {
    const t0 = performance.now();
    const c = await tigerCapture('127.0.0.1', qemu.port, { shared: true });
    t.diagnostic(`tigerCapture (Xvfb + viewer + settle + grab + cleanup): ${Math.round(performance.now() - t0)} ms`);
    assertSame(c, asCapture(pattern), 'TigerVNC');
    if (gvncPicture) assertSame(c, gvncPicture, 'TigerVNC vs gvnccapture');
  });

  test('noVNC in headless Chromium: the same picture, pixel-exact', { skip: skipBrowser }, async (t) => {
    const t0 = performance.now();
    const s = await openNoVnc(pageUrl(pages.base, qemu.wsPort as number), { browser });
    try {
      t.diagnostic(`page loaded and RFB connected in ${Math.round(performance.now() - t0)} ms`);
      const c = await waitForPixels(() => s.canvasRgb(), asCapture(pattern), 10_000);
      t.diagnostic(`canvas matched after ${Math.round(performance.now() - t0)} ms`);
      if (gvncPicture) assertSame(c, gvncPicture, 'noVNC vs gvnccapture');
      // toDataURL PNG path (what the doc's recipe uses) gives the same pixels
      assertSame(decodePng(await s.canvasPng()), asCapture(pattern), 'noVNC toDataURL PNG');
    } finally {
      await s.close();
    }
  });

  test('shared TigerVNC and noVNC follow a mode switch (DesktopSize)', { skip: skipTiger || skipBrowser }, async (t) => {
    const v = await startTigerViewer('127.0.0.1', qemu.port, { shared: true });
    const s = await openNoVnc(pageUrl(pages.base, qemu.wsPort as number), { browser });
    try {
      await waitForPixels(() => v.grab(), asCapture(pattern), 5000);
      await waitForPixels(() => s.canvasRgb(), asCapture(pattern), 5000);
      const t0 = performance.now();
      const big = await qemu.showPattern(800, 600, 21);
      await waitForPixels(() => v.grab(), asCapture(big), 5000);
      await waitForPixels(() => s.canvasRgb(), asCapture(big), 5000);
      t.diagnostic(`800x600 on both after ${Math.round(performance.now() - t0)} ms`);
      const g = await v.geometry();
      assert.deepEqual([g.width, g.height], [800, 600]);
      const small = await qemu.showPattern(320, 200, 5);
      await waitForPixels(() => v.grab(), asCapture(small), 5000);
      await waitForPixels(() => s.canvasRgb(), asCapture(small), 5000);
      assert.ok(v.running());
      assert.equal(await s.state(), 'connected');
    } finally {
      await s.close();
      await v.close();
      pattern = await qemu.showPattern(640, 480, 7);
    }
  });

  test('exclusive gvnccapture disconnects shared viewers (QEMU share=allow-exclusive)', { skip: skipGvnc || skipTiger || skipBrowser }, async () => {
    const v = await startTigerViewer('127.0.0.1', qemu.port, { shared: true });
    const s = await openNoVnc(pageUrl(pages.base, qemu.wsPort as number), { browser });
    try {
      await waitForPixels(() => v.grab(), asCapture(pattern), 5000);
      await gvncCapture('127.0.0.1', qemu.port, png('exclusive'));
      assert.equal(await s.waitForState('disconnected', 5000), 'disconnected');
      const r = await Promise.race([v.exited, new Promise((res) => setTimeout(() => res('still running'), 5000))]);
      assert.notEqual(r, 'still running', 'the TigerVNC viewer should have been disconnected');
    } finally {
      await s.close();
      await v.close();
    }
  });

  describe('VNC password (QEMU password-secret)', () => {
    const PASSWORD = 'pa55,wd';
    let q: QemuVnc;
    let p: Pattern;
    before(async () => {
      q = await startQemuVnc({ websocket: true, password: PASSWORD });
      p = await q.showPattern(320, 240, 11);
    });
    after(async () => {
      await q?.close();
    });

    test('gvnccapture: right password captures, wrong or none fails', { skip: skipGvnc }, async () => {
      await waitForPixels(() => gvncCapture('127.0.0.1', q.port, png('pw'), { password: PASSWORD }), asCapture(p), 10_000);
      await assert.rejects(gvncCapture('127.0.0.1', q.port, png('pw-wrong'), { password: 'wrong', timeoutMs: 5000 }), VncClientError);
      await assert.rejects(gvncCapture('127.0.0.1', q.port, png('pw-none'), { timeoutMs: 5000 }), VncClientError);
      assert.ok(!existsSync(png('pw-wrong')) && !existsSync(png('pw-none')));
    });

    test('TigerVNC: right password shows the picture, wrong or none fails fast', { skip: skipTiger }, async () => {
      assertSame(await tigerCapture('127.0.0.1', q.port, { password: PASSWORD, shared: true }), asCapture(p), 'TigerVNC with password');
      await assert.rejects(startTigerViewer('127.0.0.1', q.port, { password: 'wrong', timeoutMs: 5000 }), /Authentication failure/);
      await assert.rejects(startTigerViewer('127.0.0.1', q.port, { timeoutMs: 5000 }), /asks for a password/);
    });

    test('noVNC: right password connects, wrong one is a security failure', { skip: skipBrowser }, async () => {
      const ok = await openNoVnc(pageUrl(pages.base, q.wsPort as number, { password: PASSWORD }), { browser });
      try {
        await waitForPixels(() => ok.canvasRgb(), asCapture(p), 5000);
      } finally {
        await ok.close();
      }
      const bad = await openNoVnc(pageUrl(pages.base, q.wsPort as number, { password: 'wrong' }), { browser, waitConnected: false });
      try {
        assert.equal(await bad.waitForState('securityfailure', 5000), 'securityfailure');
      } finally {
        await bad.close();
      }
      const none = await openNoVnc(pageUrl(pages.base, q.wsPort as number), { browser, waitConnected: false });
      try {
        assert.equal(await none.waitForState('credentialsrequired', 5000), 'credentialsrequired');
      } finally {
        await none.close();
      }
    });
  });

  test('cleanup: no processes, X servers or temp directories left behind', { skip: skipGvnc || skipTiger || skipBrowser }, async () => {
    const before = new Set(ourChildren().keys());
    const v = await startTigerViewer('127.0.0.1', qemu.port, { shared: true });
    let started: [number, string][] = [];
    try {
      const s = await openNoVnc(pageUrl(pages.base, qemu.wsPort as number)); // its own browser
      try {
        started = [...ourChildren()].filter(([pid]) => !before.has(pid));
        const names = started.map(([, n]) => n).sort();
        // /proc/<pid>/stat's comm is cut at 15 characters
        for (const want of ['Xvfb', 'xtigervncviewer', 'chromium'])
          assert.ok(
            names.some((n) => n.startsWith(want.slice(0, 15))),
            `${want} should be a child: ${names}`,
          );
        await waitForPixels(() => v.grab(), asCapture(pattern), 5000);
        await waitForPixels(() => s.canvasRgb(), asCapture(pattern), 5000);
      } finally {
        await s.close();
      }
    } finally {
      await v.close();
    }
    await gvncCapture('127.0.0.1', qemu.port, png('last'), { password: 'unused' }); // through script(1): a pty session
    for (const [pid, name] of started) {
      assert.ok(await eventually(() => !pidAlive(pid)), `${name} (${pid}) still running`);
      assert.ok(await eventually(() => processGroup(pid).length === 0), `${name}'s process group ${pid} still has ${processGroup(pid)}`);
    }
    const leftovers = [...ourChildren()].filter(([pid]) => !before.has(pid));
    assert.deepEqual(leftovers, [], 'new child processes after close()');
    assert.ok(!existsSync(`/tmp/.X${v.display}-lock`), 'Xvfb lock file left');
    assert.ok(!existsSync(`/tmp/.X11-unix/X${v.display}`), 'Xvfb socket left');
    assert.ok(!existsSync(v.dir), 'viewer temp dir left');
  });
});
