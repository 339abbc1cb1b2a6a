// PCI config space: over the socket as QEMU and the guest see it (IDs, BAR
// type bits, BAR sizing, command register, capability list, MSI-X table and
// PBA in BAR4), and ConfigSpace as a unit (I/O BARs, W1C status, listeners).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { MsiCapability } from '../../src/device/capabilities/msi.js';
import { Cfg, Command, ConfigSpace, type PciIdentity, Status } from '../../src/device/pci-config.js';
import * as native from '../../src/native/index.js';
import type { VfioUserClient } from '../../src/vfio-user/client.js';
import { Errno, IRQ_SET_ACTION_TRIGGER, IRQ_SET_DATA_EVENTFD, PciIrq, PciRegion } from '../../src/vfio-user/constants.js';
import { BAR0_SIZE, BAR2_SIZE, BAR4_SIZE, DEVICE, type Harness, le, startServer, u16, u32, VENDOR } from '../vfio-user/fixture.js';

const CONFIG = PciRegion.CONFIG;

describe('config space over the socket', () => {
  let h: Harness;
  let c: VfioUserClient;
  const r8 = async (o: number) => (await c.regionRead(CONFIG, o, 1))[0] as number;
  const r16 = async (o: number) => u16(await c.regionRead(CONFIG, o, 2), 0);
  const r32 = async (o: number) => u32(await c.regionRead(CONFIG, o, 4), 0);
  const w16 = (o: number, v: number) => c.regionWrite(CONFIG, o, le([v, 2]));
  const w32 = (o: number, v: number) => c.regionWrite(CONFIG, o, le([v, 4]));

  before(async () => {
    h = await startServer();
    c = await h.connect();
  });
  after(async () => {
    c.close();
    await h.close();
  });

  it('identity: vendor/device, class, revision, subsystem, header type 0, interrupt pin A', async () => {
    assert.equal(await r16(Cfg.VENDOR_ID), VENDOR);
    assert.equal(await r16(Cfg.DEVICE_ID), DEVICE);
    assert.equal(await r32(Cfg.REVISION), 0xff000003); // class ff0000, revision 3
    assert.equal(await r16(Cfg.SUBSYSTEM_VENDOR_ID), 0x1af4);
    assert.equal(await r16(Cfg.SUBSYSTEM_ID), 0x1100);
    assert.equal(await r8(Cfg.HEADER_TYPE), 0);
    assert.equal(await r8(Cfg.INTERRUPT_PIN), 1);
    // One 256-byte read as QEMU does at realize matches byte reads.
    const all = await c.regionRead(CONFIG, 0, 256);
    assert.equal(u16(all, 0), VENDOR);
    assert.equal(all[Cfg.INTERRUPT_PIN], 1);
  });

  it('BAR type bits: mem32, 64-bit prefetchable (upper half in BAR3), absent BARs read 0', async () => {
    assert.equal(await r32(0x10), 0x0); // BAR0 mem32, not prefetchable
    assert.equal(await r32(0x14), 0x0); // BAR1 absent
    assert.equal(await r32(0x18), 0x4 | 0x8); // BAR2: 64-bit, prefetchable
    assert.equal(await r32(0x1c), 0x0); // BAR3 = upper dword of BAR2
    assert.equal(await r32(0x20), 0x0); // BAR4 mem32
    assert.equal(await r32(0x24), 0x0); // BAR5 absent
    assert.equal(await r32(Cfg.ROM), 0x0); // no ROM
  });

  it('BAR sizing: all-ones reads back the size mask with the type bits; absent BARs and ROM stay 0', async () => {
    const size = async (o: number) => {
      await w32(o, 0xffffffff);
      const v = await r32(o);
      await w32(o, 0);
      return v;
    };
    assert.equal(await size(0x10), (~(BAR0_SIZE - 1) & 0xfffffff0) >>> 0);
    assert.equal(await size(0x14), 0);
    assert.equal(await size(0x18), ((~(BAR2_SIZE - 1) & 0xfffffff0) | 0xc) >>> 0);
    assert.equal(await size(0x1c), 0xffffffff); // upper half of a 16 KiB 64-bit BAR
    assert.equal(await size(0x20), (~(BAR4_SIZE - 1) & 0xfffffff0) >>> 0);
    assert.equal(await size(0x24), 0);
    assert.equal(await size(Cfg.ROM), 0);
    // Programming an address keeps the low bits the BAR owns.
    await w32(0x18, 0xfe000000);
    await w32(0x1c, 0x1);
    assert.equal(await r32(0x18), 0xfe00000c);
    assert.equal(h.device.config.barAddress(2), 0x1_fe000000);
    await w32(0x10, 0xfebf0123);
    assert.equal(await r32(0x10), 0xfebf0000);
    assert.equal(h.device.config.barAddress(0), 0xfebf0000);
  });

  it('command register: only implemented bits stick (no I/O BAR → IO bit reads 0)', async () => {
    await w16(Cfg.COMMAND, 0xffff);
    const cmd = await r16(Cfg.COMMAND);
    assert.equal(cmd, Command.MEMORY | Command.MASTER | Command.PARITY | Command.SERR | Command.INTX_DISABLE);
    assert.ok(h.device.busMaster);
    await w16(Cfg.COMMAND, 0);
    assert.equal(await r16(Cfg.COMMAND), 0);
    assert.ok(!h.device.busMaster);
  });

  it('status: CAP_LIST set and read-only; vendor and device ID read-only', async () => {
    assert.ok((await r16(Cfg.STATUS)) & Status.CAP_LIST);
    await w16(Cfg.STATUS, 0xffff);
    assert.ok((await r16(Cfg.STATUS)) & Status.CAP_LIST);
    await w32(0, 0);
    assert.equal(await r16(Cfg.VENDOR_ID), VENDOR);
    await w16(Cfg.INTERRUPT_PIN - 1, 0xffff); // line writable, pin not
    assert.equal(await r8(Cfg.INTERRUPT_LINE), 0xff);
    assert.equal(await r8(Cfg.INTERRUPT_PIN), 1);
  });

  it('capability list: MSI (5) then MSI-X (17), dword aligned pointers, terminated', async () => {
    const ids: number[] = [];
    const seen = new Set<number>();
    let ptr = await r8(Cfg.CAP_PTR);
    while (ptr !== 0) {
      assert.ok(ptr >= 0x40 && ptr <= 0xfc, `pointer 0x${ptr.toString(16)} inside the device-specific area`);
      assert.equal(ptr & 3, 0, 'dword aligned');
      assert.ok(!seen.has(ptr), 'no loop');
      seen.add(ptr);
      ids.push(await r8(ptr));
      ptr = await r8(ptr + 1);
    }
    assert.deepEqual(ids, [0x05, 0x11]);
    const [msi, msix] = [...seen];
    // MSI: 64-bit, 2 vectors (MMC 1)
    const msiCtl = await r16((msi as number) + 2);
    assert.equal(msiCtl & 0x80, 0x80);
    assert.equal((msiCtl >> 1) & 7, 1);
    // MSI-X: table size 4 (N-1 = 3), table in BAR4 at 0, PBA in BAR4 at 4096
    assert.equal((await r16((msix as number) + 2)) & 0x7ff, 3);
    assert.equal(await r32((msix as number) + 4), 0x0 | 4);
    assert.equal(await r32((msix as number) + 8), 4096 | 4);
  });

  it('MSI enable and message data are writable; reserved bits are not', async () => {
    const msi = await r8(Cfg.CAP_PTR);
    await w16(msi + 2, 0xffff);
    const ctl = await r16(msi + 2);
    assert.equal(ctl & 1, 1);
    assert.equal(ctl & 0x80, 0x80, '64-bit bit is read-only and stays');
    assert.ok(h.device.msi?.enabled);
    await w32(msi + 4, 0xfee00003);
    assert.equal(await r32(msi + 4), 0xfee00000, 'address dword aligned');
    await w16(msi + 12, 0x4041);
    assert.equal(await r16(msi + 12), 0x4041);
    await w16(msi + 2, 0);
    assert.ok(!h.device.msi?.enabled);
  });

  it('extended config space reads as zero and ignores writes; beyond 4 KiB is EINVAL', async () => {
    assert.deepEqual([...(await c.regionRead(CONFIG, 0x100, 8))], [0, 0, 0, 0, 0, 0, 0, 0]);
    await c.regionWrite(CONFIG, 0x100, le([0xdeadbeef, 4]));
    assert.equal(await r32(0x100), 0);
    await assert.rejects(c.regionRead(CONFIG, 0xffc, 8), { errno: Errno.EINVAL });
    await assert.rejects(c.regionRead(CONFIG, 0xfc, 8), { errno: Errno.EINVAL }, 'crossing 256 is EINVAL');
    await assert.rejects(c.regionRead(CONFIG, 0x1000, 4), { errno: Errno.EINVAL });
  });

  it('MSI-X as QEMU drives it: enable in config, eventfds by SET_IRQS, table never written through us → vectors fire', async () => {
    const efds = [native.eventfd(), native.eventfd(), native.eventfd(), native.eventfd()];
    const ptr = await r8(Cfg.CAP_PTR);
    const msix = await r8(ptr + 1);
    try {
      // QEMU emulates the table itself (its accesses never reach us) and forwards config writes.
      await w16(msix + 2, 0x8000 | 3);
      assert.ok(h.device.msix?.enabled);
      await c.setIrqs(PciIrq.MSIX, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 4, efds);
      assert.equal(h.device.irqs.mode, 'msix');
      h.device.raise(true, 2);
      h.device.raise(false, 2);
      assert.equal(native.eventfdRead(efds[2] as number), 1, 'vector 2 signalled');
      assert.equal(native.eventfdRead(efds[0] as number), -native.EAGAIN);
      // Function mask is QEMU's business too: it sets pending bits in its own PBA on a fire.
      await w16(msix + 2, 0xc000 | 3);
      h.device.raise(true, 1);
      h.device.raise(false, 1);
      assert.equal(native.eventfdRead(efds[1] as number), 1, 'QEMU must see the fire to latch it');
    } finally {
      await w16(msix + 2, 0);
      await c.setIrqs(PciIrq.MSIX, 1 | 32, 0, 0);
      for (const fd of efds) native.close(fd);
    }
  });

  it('MSI-X: a vector masked by SET_IRQS sets its PBA bit; unmask delivers it and clears the bit', async () => {
    const efds = [native.eventfd(), native.eventfd(), native.eventfd(), native.eventfd()];
    try {
      await c.setIrqs(PciIrq.MSIX, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 4, efds);
      await c.setIrqs(PciIrq.MSIX, 1 | 8, 2, 1); // DATA_NONE | ACTION_MASK vector 2
      h.device.raise(true, 2);
      h.device.raise(false, 2);
      assert.equal(native.eventfdRead(efds[2] as number), -native.EAGAIN);
      assert.equal((await c.regionRead(4, 4096, 8))[0], 1 << 2, 'PBA bit 2');
      await c.regionWrite(4, 4096, le([0xff, 8]));
      assert.equal((await c.regionRead(4, 4096, 1))[0], 1 << 2, 'PBA is read-only');
      await c.setIrqs(PciIrq.MSIX, 1 | 16, 2, 1); // ACTION_UNMASK
      assert.equal(native.eventfdRead(efds[2] as number), 1, 'pending vector delivered on unmask');
      assert.equal((await c.regionRead(4, 4096, 1))[0], 0, 'PBA bit cleared once delivered');
      // The table itself is plain storage in BAR4 for clients that do reach it.
      await c.regionWrite(4, 2 * 16, le([0xfee00000, 4], [0, 4], [0x4022, 4], [0, 4]));
      assert.equal(u32(await c.regionRead(4, 2 * 16 + 8, 4), 0), 0x4022);
      // BAR4 outside the table and PBA falls to the BAR's own registers.
      assert.equal((await c.regionRead(4, 6000, 1))[0], 0x5a);
    } finally {
      await c.setIrqs(PciIrq.MSIX, 1 | 32, 0, 0);
      for (const fd of efds) native.close(fd);
    }
  });
});

const ID: PciIdentity = { vendorId: 0x1b36, deviceId: 2, subsystemVendorId: 0, subsystemId: 0, classCode: 0x070002, revision: 1, interruptPin: 0 };

describe('ConfigSpace unit', () => {
  it('I/O BAR: bit 0 set, sizing mask, IO command bit implemented', () => {
    const cs = new ConfigSpace(ID, [{ kind: 'io', size: 8 }]);
    assert.equal(cs.u32(0x10), 1);
    cs.write(0x10, le([0xffffffff, 4]));
    assert.equal(cs.u32(0x10), 0xfffffff9);
    cs.write(0x10, le([0xc000, 4]));
    assert.equal(cs.barAddress(0), 0xc000);
    cs.write(Cfg.COMMAND, le([0xffff, 2]));
    assert.equal(cs.command, Command.IO | Command.MASTER | Command.PARITY | Command.SERR, 'no MEMORY without memory BARs, no INTX_DISABLE without a pin');
  });

  it('validates BAR sizes and 64-bit slot pairs', () => {
    assert.throws(() => new ConfigSpace(ID, [{ kind: 'mem32', size: 3000 }]), /power of two/);
    assert.throws(() => new ConfigSpace(ID, [{ kind: 'mem32', size: 8 }]), /at least 16/);
    assert.throws(() => new ConfigSpace(ID, [{ kind: 'io', size: 512 }]), /4\.\.256/);
    assert.throws(
      () =>
        new ConfigSpace(ID, [
          { kind: 'mem64', size: 4096 },
          { kind: 'mem32', size: 4096 },
        ]),
      /next slot/,
    );
    assert.throws(() => new ConfigSpace(ID, [null, null, null, null, null, { kind: 'mem64', size: 4096 }]), /next slot/);
    assert.throws(() => new ConfigSpace(ID, [null, null, null, null, null, null, null]), /six BARs/);
  });

  it('64-bit BAR above 4 GiB in size: both halves carry mask bits', () => {
    const cs = new ConfigSpace(ID, [{ kind: 'mem64', size: 2 ** 33 }]);
    cs.write(0x10, le([0xffffffff, 4], [0xffffffff, 4]));
    assert.equal(cs.u32(0x10), 0x4);
    assert.equal(cs.u32(0x14), 0xfffffffe);
  });

  it('status error bits are write-1-to-clear; the interrupt bit follows the line only', () => {
    const cs = new ConfigSpace({ ...ID, interruptPin: 1 }, [{ kind: 'mem32', size: 4096 }]);
    cs.setU16(Cfg.STATUS, 0xf900);
    cs.setInterruptStatus(true);
    cs.write(Cfg.STATUS, le([0x0608, 2])); // DEVSEL and the interrupt bit are read-only
    assert.equal(cs.u16(Cfg.STATUS), 0xf908);
    cs.write(Cfg.STATUS, le([0x0100, 2])); // master data parity error: W1C
    assert.equal(cs.u16(Cfg.STATUS), 0xf808);
    cs.write(Cfg.STATUS, le([0x8000, 2]));
    assert.equal(cs.u16(Cfg.STATUS), 0x7808);
    cs.write(Cfg.COMMAND, le([0x0002, 4])); // dword write with status 0: clears nothing
    assert.equal(cs.u16(Cfg.STATUS), 0x7808);
    cs.write(Cfg.COMMAND, le([0xffff0002, 4]));
    assert.equal(cs.u16(Cfg.STATUS), 0x0008);
    cs.setInterruptStatus(false);
    assert.equal(cs.u16(Cfg.STATUS), 0);
  });

  it('listeners see command and BAR changes; reset restores power-on bytes', () => {
    const cs = new ConfigSpace({ ...ID, interruptPin: 1 }, [{ kind: 'mem32', size: 4096 }]);
    cs.addCapability(new MsiCapability(4));
    const power = cs.bytes.slice();
    const events: string[] = [];
    cs.listener = {
      commandChanged: (a, b) => events.push(`cmd ${a}->${b}`),
      barChanged: (i, a) => events.push(`bar${i} ${a.toString(16)}`),
    };
    cs.write(Cfg.COMMAND, le([0x0406, 2]));
    cs.write(Cfg.COMMAND, le([0x0406, 2])); // unchanged: no event
    cs.write(0x10, le([0xfe000000, 4]));
    assert.deepEqual(events, ['cmd 0->1030', 'bar0 fe000000']);
    assert.equal(cs.barAddress(0), 0xfe000000);
    cs.reset();
    assert.deepEqual(cs.bytes, power);
  });

  it('capabilities overflowing conventional space are refused', () => {
    const cs = new ConfigSpace(ID, []);
    for (let i = 0; i < 12; i++) cs.addCapability(new MsiCapability()); // 14 bytes each, every 16 from 0x40
    assert.throws(() => cs.addCapability(new MsiCapability()), /overflow/);
    assert.throws(() => new MsiCapability(3), /powers of two/);
  });
});
