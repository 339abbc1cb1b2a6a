// The VNC server and browser viewer with real clients: gvnccapture (gtk-vnc,
// ZRLE), TigerVNC under Xvfb (Tight) and noVNC in headless Chromium (Tight over
// our WebSocket) all show a real guest's picture pixel-exact; a guest mode
// change resizes every client; a wrong password is refused; eight viewers at
// once all see the picture; viewer input reaches the instance's input hook.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ControlClient } from '../../src/daemon/control-client.js';
import { Daemon, defaultConfig } from '../../src/daemon/daemon.js';
import { launchChromium, openNoVnc } from '../harness/browser.js';
import { type Pattern, rgb565Pattern, xrgbPattern } from '../harness/patterns.js';
import { bootGuest, type Guest } from '../harness/qemu.js';
import { type Capture, freePort, gvncCapture, startTigerViewer, waitForPixels } from '../harness/vnc-clients.js';

const SCRIPT = `
D=""; for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor)" = 0x1234 ] && D=$d; done
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 150 ]; do sleep 0.1; n=$((n+1)); done
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
dd if=/p32.raw of=/dev/fb0 bs=$(stat -c %s /p32.raw) count=1 2>/dev/null
echo "T: stage1"
read go
dd if=/p16.raw of=/dev/fb0 bs=$(stat -c %s /p16.raw) count=1 2>/dev/null
sleep 1
echo \${D##*/} > /sys/bus/pci/drivers/bochs-drm/unbind
B2=$(sed -n 3p $D/resource | cut -d' ' -f1)
dispi() { devmem $((B2 + 0x500 + 2 * $1)) 16 $2; }
dispi 4 0; dispi 1 800; dispi 2 600; dispi 3 16; dispi 6 800; dispi 8 0; dispi 9 0; dispi 4 0x41
echo "T: stage2"
read go
`;

const asCapture = (p: Pattern): Capture => ({ width: p.width, height: p.height, rgb: p.rgb });

/** waitForPixels with the client's name in the failure. */
async function see(what: string, capture: () => Promise<Capture>, want: Capture): Promise<void> {
  try {
    await waitForPixels(capture, want, 20_000);
  } catch (e) {
    throw new Error(`${what}: ${(e as Error).message}`);
  }
}

let dir: string;
let daemon: Daemon;
let client: ControlClient;
let guest: Guest | null = null;
let uuid = '';
let vncPort = 0;
let viewerUrl = '';

const p32 = xrgbPattern(1280, 800, 42);
const p16 = rgb565Pattern(800, 600);

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mediated-vnc-'));
  daemon = new Daemon({ runDir: join(dir, 'run'), stateDir: join(dir, 'state'), config: defaultConfig(), log: () => {}, http: { host: '127.0.0.1', port: 0 } });
  await daemon.start();
  client = new ControlClient(daemon.controlPath);
  vncPort = await freePort();
  const r = await client.call<{ uuid: string; socket: string }>('start', {
    parent: 'mediated0',
    type: 'mediated-bochs-medium',
    attrs: [{ vnc: `127.0.0.1:${vncPort}` }],
  });
  uuid = r.uuid;
  const facts = daemon.displayFacts(uuid);
  assert.equal(facts.vnc, `127.0.0.1:${vncPort}`);
  viewerUrl = facts.viewer as string;
  guest = await bootGuest({
    workDir: join(dir, 'vm'),
    script: SCRIPT,
    files: [
      { path: '/p32.raw', data: p32.raw },
      // RGB565 bytes go through the driver's fbdev first (it is still bound), then the mode changes.
      { path: '/p16.raw', data: p16.raw },
    ],
    devices: [{ socket: r.socket }],
    timeoutMs: 170_000,
  });
  await guest.waitFor(/T: stage1/, 90_000);
});

after(async () => {
  guest?.kill();
  client?.close();
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('list --dumpjson shows the VNC address and the viewer URL', async () => {
  const doc = (await client.call('list', { uuid })) as Record<string, Record<string, Record<string, unknown>>[]>[];
  const facts = Object.values(doc[0]?.mediated0?.[0] ?? {})[0] ?? {};
  assert.equal(facts.vnc, `127.0.0.1:${vncPort}`);
  assert.match(String(facts.viewer), new RegExp(`^http://127\\.0\\.0\\.1:\\d+/vm/${uuid}\\?token=[0-9a-f]{32}$`));
});

test('gvnccapture, TigerVNC and noVNC show the guest picture pixel-exact; a mode change resizes them all', { timeout: 150_000 }, async () => {
  const want = asCapture(p32);
  await see('gvnccapture', () => gvncCapture('127.0.0.1', vncPort, join(dir, 'g1.png')), want);
  const tiger = await startTigerViewer('127.0.0.1', vncPort, { shared: true });
  const novnc = await openNoVnc(viewerUrl);
  try {
    await see('TigerVNC', () => tiger.grab(), want);
    await see('noVNC', () => novnc.canvasRgb(), want);
    // The guest switches to 800x600 RGB565 through real MMIO: every open viewer follows.
    guest?.write('go\n');
    await guest?.waitFor(/T: stage2/);
    const small = asCapture(p16);
    await see('noVNC after the mode change', () => novnc.canvasRgb(), small);
    await see('TigerVNC after the mode change', () => tiger.grab(), small);
    await see('gvnccapture after the mode change', () => gvncCapture('127.0.0.1', vncPort, join(dir, 'g2.png')), small);
  } finally {
    await novnc.close();
    await tiger.close();
  }
});

test('eight simultaneous browser viewers all see the picture, and viewer input reaches the input hook', { timeout: 90_000 }, async () => {
  const browser = await launchChromium();
  const events: unknown[] = [];
  const sub = new ControlClient(daemon.controlPath);
  sub.onEvent((e) => events.push(e));
  await sub.call('subscribe-input', { uuid });
  try {
    const sessions = await Promise.all(Array.from({ length: 8 }, () => openNoVnc(viewerUrl, { browser })));
    assert.equal(daemon.consumers.get(uuid)?.vnc.display.sessions.size, 8);
    const want = asCapture(p16);
    for (const s of sessions) await waitForPixels(() => s.canvasRgb(), want, 20_000);
    await sessions[0]?.page.evaluate('window.rfb.sendKey(0x61, "KeyA")');
    await sessions[1]?.page.mouse.click(200, 200);
    const deadline = Date.now() + 5000;
    while (events.length < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const kinds = events.map((e) => (e as { input: { kind: string } }).input.kind);
    assert.ok(kinds.includes('key'), `key events arrived: ${JSON.stringify(events)}`);
    assert.ok(kinds.includes('pointer'), 'pointer events arrived');
    for (const s of sessions) await s.close();
  } finally {
    sub.close();
    await browser.close();
  }
});

test('a VNC password is enforced: the right one works, a wrong one is refused', { timeout: 60_000 }, async () => {
  const port = await freePort();
  const r = await client.call<{ uuid: string }>('start', {
    parent: 'mediated0',
    type: 'mediated-bochs-small',
    attrs: [{ vnc: `127.0.0.1:${port}` }, { vnc_password: 's3cret' }],
  });
  try {
    const ok = await gvncCapture('127.0.0.1', port, join(dir, 'pw-ok.png'), { password: 's3cret' });
    assert.equal(ok.width, 640, 'the small vGPU shows its 640x480 "no mode yet" screen');
    await assert.rejects(gvncCapture('127.0.0.1', port, join(dir, 'pw-bad.png'), { password: 'wrong', timeoutMs: 8000 }));
  } finally {
    await client.call('stop', { uuid: r.uuid });
  }
});
