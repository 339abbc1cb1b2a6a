// The vGPU with real QEMU and unmodified Linux guests of both bochs
// generations: the stock driver binds and modesets, the guest's picture
// appears pixel-exact in screenshots taken through the buffer export, mode
// changes (other resolutions, 16 and 24 bpp) are decoded, and two VMs at once
// each see only their own VRAM.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { screenshot } from '../../src/daemon/consumer.js';
import { ControlClient } from '../../src/daemon/control-client.js';
import { Daemon, defaultConfig } from '../../src/daemon/daemon.js';
import type { BochsVgpu } from '../../src/devices/vgpu/bochs-vgpu.js';
import { DrmFormat, type PlaneInfo } from '../../src/display/plane.js';
import * as native from '../../src/native/index.js';
import { VfioUserClient } from '../../src/vfio-user/client.js';
import { diffPixels, type Pattern, rgb565Pattern, rgb888Pattern, xrgbPattern } from '../harness/patterns.js';
import { decodePng } from '../harness/png-decode.js';
import { bootGuest, type Guest } from '../harness/qemu.js';

const run = promisify(execFile);

const STAGED_SCRIPT = `
D=""; for d in /sys/bus/pci/devices/*; do [ "$(cat $d/vendor)" = 0x1234 ] && D=$d; done
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 150 ]; do sleep 0.1; n=$((n+1)); done
echo "T: fb0 $(cat /sys/class/graphics/fb0/virtual_size)"
echo "T: driver $(basename $(readlink $D/driver))"
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
# One write() of the whole picture (6.12 loses damage of single-scanline writes).
dd if=/p32.raw of=/dev/fb0 bs=$(stat -c %s /p32.raw) count=1 2>/dev/null
echo "T: stage1"
read go
# Stage the next pictures in VRAM through the driver's fbdev (one write: RGB565 at
# offset 0, RGB888 at 1152000), then let another "driver" (this script) program the
# modes through real MMIO once bochs-drm is unbound.
dd if=/next.raw of=/dev/fb0 bs=$(stat -c %s /next.raw) count=1 2>/dev/null
sleep 1
echo \${D##*/} > /sys/bus/pci/drivers/bochs-drm/unbind
B2=$(sed -n 3p $D/resource | cut -d' ' -f1)
dispi() { devmem $((B2 + 0x500 + 2 * $1)) 16 $2; }
mode() { dispi 4 0; dispi 1 $1; dispi 2 $2; dispi 3 $3; dispi 6 $1; dispi 8 0; dispi 9 $4; dispi 4 0x41; }
mode 800 600 16 0
echo "T: stage2"
read go
mode 640 480 24 600
echo "T: stage3"
read go
# A mode that cannot fit the 16 MiB VRAM must be refused, not scanned out of bounds.
mode 4096 4096 32 0
echo "T: stage4"
read go
`;

let dir: string;
let daemon: Daemon;
let client: ControlClient;
const guests: Guest[] = [];

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'mediated-vgpu-'));
  daemon = new Daemon({ runDir: join(dir, 'run'), stateDir: join(dir, 'state'), config: defaultConfig(), log: () => {} });
  await daemon.start();
  client = new ControlClient(daemon.controlPath);
});

after(async () => {
  for (const g of guests) g.kill();
  client?.close();
  await daemon?.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function startVgpu(type = 'mediated-bochs-medium'): Promise<{ uuid: string; socket: string; vgpu: BochsVgpu }> {
  const r = await client.call<{ uuid: string; socket: string }>('start', { parent: 'mediated0', type });
  const vgpu = daemon.core.instance(r.uuid)?.device?.backend as BochsVgpu;
  return { ...r, vgpu };
}

/** Polls screenshots until the picture equals `p` (fbdev flushes from a deferred worker). */
async function expectPicture(uuid: string, p: Pattern, format: number, what: string): Promise<PlaneInfo> {
  const deadline = Date.now() + 20_000;
  let last = '';
  for (;;) {
    const plane = await client.call<PlaneInfo>('plane-query', { uuid });
    if (plane.drm_format === format && plane.width === p.width && plane.height === p.height) {
      const img = decodePng(await screenshot(client, uuid));
      const diff = diffPixels(img.rgb, p.rgb);
      if (diff === 0) return plane;
      last = `${diff} of ${p.width * p.height} pixels differ`;
    } else last = `plane is ${plane.width}x${plane.height} format 0x${plane.drm_format.toString(16)}`;
    if (Date.now() > deadline) assert.fail(`${what}: ${last}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

for (const gen of ['6.12', 'new']) {
  describe(`guest kernel ${gen}`, () => {
    test('bochs-drm binds; XRGB8888, RGB565 and RGB888 pictures are pixel-exact; an oversized mode is refused', { timeout: 150_000 }, async () => {
      const { uuid, socket, vgpu } = await startVgpu();
      // 6.12 takes the EDID's preferred mode; the newer kernel is told another one on its command line.
      const [w, h] = gen === '6.12' ? [1280, 800] : [1024, 768];
      const p32 = xrgbPattern(w, h, gen === '6.12' ? 0 : 17);
      const p16 = rgb565Pattern(800, 600);
      const p24 = rgb888Pattern(640, 480);
      const changes: PlaneInfo[] = [];
      const sub = new ControlClient(daemon.controlPath);
      sub.onEvent((e) => changes.push((e as { plane: PlaneInfo }).plane));
      await sub.call('subscribe', { uuid });
      const guest = await bootGuest({
        guest: gen,
        workDir: join(dir, `vm-${gen}`),
        script: STAGED_SCRIPT,
        files: [
          { path: '/p32.raw', data: p32.raw },
          { path: '/next.raw', data: Buffer.concat([p16.raw, Buffer.alloc(1_152_000 - p16.raw.length), p24.raw]) },
        ],
        devices: [{ socket, id: 'gpu0' }],
        append: gen === '6.12' ? '' : `video=Virtual-1:${w}x${h}`,
        timeoutMs: 140_000,
      });
      guests.push(guest);
      try {
        await guest.waitFor(/T: stage1/, 90_000);
        assert.match(guest.output(), /T: driver bochs-drm/);
        assert.match(guest.output(), new RegExp(`T: fb0 ${w},${h}`));
        const plane1 = await expectPicture(uuid, p32, DrmFormat.XRGB8888, `${w}x${h} XRGB8888`);
        assert.equal(plane1.stride, w * 4);
        // The CLI writes the same PNG as the consumer API.
        const out = join(dir, `shot-${gen}.png`);
        await run(process.execPath, ['dist/src/daemon/cli.js', 'screenshot', '-u', uuid, '-o', out, '--run-dir', join(dir, 'run')]);
        assert.equal(diffPixels(decodePng(readFileSync(out)).rgb, p32.rgb), 0, 'mediated screenshot is pixel-exact');

        guest.write('go\n');
        await guest.waitFor(/T: stage2/);
        const plane2 = await expectPicture(uuid, p16, DrmFormat.RGB565, '800x600 RGB565');
        assert.equal(plane2.stride, 1600);
        assert.notEqual(plane2.dmabuf_id, plane1.dmabuf_id, 'a new plane gets a new id');

        guest.write('go\n');
        await guest.waitFor(/T: stage3/);
        await expectPicture(uuid, p24, DrmFormat.RGB888, '640x480 RGB888');

        guest.write('go\n');
        await guest.waitFor(/T: stage4/);
        await new Promise((r) => setTimeout(r, 300));
        const refused = await client.call<PlaneInfo>('plane-query', { uuid });
        assert.equal(refused.drm_format, 0, 'a 4096x4096x32 mode does not fit 16 MiB and shows no plane');
        assert.equal(vgpu.queryPlane(1).size, 0);
        guest.write('go\n');
        await guest.waitFor(/T: test-exit 0/);
        // Subscribers saw the mode changes as they happened.
        const seen = changes.map((c) => `${c.width}x${c.height}:${c.drm_format}`);
        for (const want of [`${w}x${h}:${DrmFormat.XRGB8888}`, `800x600:${DrmFormat.RGB565}`, `640x480:${DrmFormat.RGB888}`, '0x0:0']) {
          assert.ok(seen.includes(want), `plane-change event ${want} in ${seen.join(', ')}`);
        }
      } finally {
        sub.close();
        guest.kill();
        await guest.exited;
        await client.call('stop', { uuid });
      }
    });
  });
}

test("two VMs at once each show their own picture, and one instance cannot reach another one's VRAM", { timeout: 150_000 }, async () => {
  const a = await startVgpu();
  const b = await startVgpu();
  const pa = xrgbPattern(1280, 800, 5);
  const pb = xrgbPattern(1280, 800, 99);
  const script = (f: string) => `
n=0; while [ ! -e /dev/fb0 ] && [ $n -lt 150 ]; do sleep 0.1; n=$((n+1)); done
echo 32 > /sys/class/graphics/fb0/bits_per_pixel
dd if=/${f} of=/dev/fb0 bs=$(stat -c %s /${f}) count=1 2>/dev/null
echo "T: drawn"
read go
`;
  const ga = await bootGuest({
    workDir: join(dir, 'vm-a'),
    script: script('a.raw'),
    files: [{ path: '/a.raw', data: pa.raw }],
    devices: [{ socket: a.socket }],
    timeoutMs: 140_000,
  });
  guests.push(ga);
  const gb = await bootGuest({
    workDir: join(dir, 'vm-b'),
    script: script('b.raw'),
    files: [{ path: '/b.raw', data: pb.raw }],
    devices: [{ socket: b.socket }],
    timeoutMs: 140_000,
  });
  guests.push(gb);
  try {
    await Promise.all([ga.waitFor(/T: drawn/, 100_000), gb.waitFor(/T: drawn/, 100_000)]);
    await expectPicture(a.uuid, pa, DrmFormat.XRGB8888, 'VM A');
    await expectPicture(b.uuid, pb, DrmFormat.XRGB8888, 'VM B');
    // Each instance's VRAM holds only its own picture.
    const bytesA = a.vgpu.vram.bytes.subarray(0, pa.raw.length);
    const bytesB = b.vgpu.vram.bytes.subarray(0, pb.raw.length);
    assert.notDeepEqual(Buffer.from(bytesA.subarray(0, 4096)), Buffer.from(bytesB.subarray(0, 4096)));
    // The fd a VMM gets for BAR0 is that instance's own memory object, sized to its VRAM only.
    assert.notEqual(a.vgpu.vram.fd, b.vgpu.vram.fd);
    assert.equal(native.fileSize(b.vgpu.vram.fd), 16 << 20);
  } finally {
    ga.write('go\n');
    gb.write('go\n');
    await Promise.all([ga.exited, gb.exited]);
  }
  // Through the protocol, a client of B can address only B's regions: reads past BAR0 fail, the
  // mmap fd it receives has B's size, and writes through it never change A.
  const c = await VfioUserClient.connect(b.socket);
  try {
    const info = await c.getRegionInfo(0);
    assert.equal(info.size, 16 << 20);
    assert.ok(info.fd !== null, 'BAR0 is offered for mmap');
    assert.equal(native.fileSize(info.fd as number), 16 << 20);
    const map = native.mmap(info.fd as number, 16 << 20, 0, true);
    const beforeA = Buffer.from(a.vgpu.vram.bytes.subarray(0, 1 << 20));
    new Uint8Array(map).fill(0x5a);
    native.munmap(map);
    native.close(info.fd as number);
    assert.deepEqual(Buffer.from(a.vgpu.vram.bytes.subarray(0, 1 << 20)), beforeA, 'filling B changed nothing in A');
    assert.equal(b.vgpu.vram.bytes[12345], 0x5a);
    await assert.rejects(c.regionRead(0, 16 << 20, 4), /errno 22/);
    await assert.rejects(c.regionRead(0, (16 << 20) - 2, 4), /errno 22/);
    await assert.rejects(c.regionWrite(0, 2 ** 40, new Uint8Array(4)), /errno 22/);
  } finally {
    c.close();
    await client.call('stop', { uuid: a.uuid });
    await client.call('stop', { uuid: b.uuid });
  }
});
