// fd and mapping leak test for whole client lifetimes: 500 × connect →
// negotiate → DMA_MAP with a memfd (and a device read through it) → SET_IRQS
// with 2 eventfds → GET_REGION_INFO with its fd → disconnect.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import { iova } from '../../src/device/addresses.js';
import * as native from '../../src/native/index.js';
import { IRQ_SET_ACTION_TRIGGER, IRQ_SET_DATA_EVENTFD, PciIrq } from '../../src/vfio-user/constants.js';
import { startServer } from './fixture.js';

/** Mappings of memfds (guest RAM windows, BARs): V8's own heap mappings vary with GC timing. */
const mapCount = () =>
  readFileSync('/proc/self/maps', 'utf8')
    .split('\n')
    .filter((l) => l.includes('/memfd:')).length;

it('500 client lifetimes with fds leave the process fd count stable (± 3)', async () => {
  const ROUNDS = 500;
  const h = await startServer();
  try {
    const base = native.fdCount();
    const samples: number[] = [];
    const maps = mapCount();
    for (let i = 0; i < ROUNDS; i++) {
      const c = await h.connect();
      const ram = native.memfd('leak-ram', 64 * 1024);
      await c.dmaMap(0x100000, 64 * 1024, 3, ram);
      native.close(ram); // the server holds its own copy now
      const probe = new Uint8Array(8);
      await h.device.memory.read(iova(0x100000 + 8 * (i % 100)), probe); // maps a window server-side
      const efds = [native.eventfd(), native.eventfd()];
      await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 2, efds);
      for (const fd of efds) native.close(fd);
      const info = await c.getRegionInfo(2);
      assert.ok(info.fd !== null, 'region fd received');
      native.close(info.fd as number);
      c.close();
      await h.idle();
      if (i % 50 === 0) samples.push(native.fdCount());
    }
    const end = native.fdCount();
    assert.ok(Math.abs(end - base) <= 3, `fd count ${base} -> ${end}`);
    assert.ok(Math.max(...samples) - Math.min(...samples) <= 3, `fd counts drifted: ${samples.join(' ')}`);
    assert.equal(mapCount(), maps, 'every guest RAM window was unmapped');
    assert.equal(h.device.memory.mappings.length, 0);
    assert.equal(h.device.irqs.mode, 'none');
  } finally {
    await h.close();
  }
});
