// Interrupts over the socket: SET_IRQS with real eventfds, INTx auto-masking
// and unmask (by message and by resample eventfd), INTX_DISABLE, MSI vectors,
// masks, loopback triggers, replacement and disable closing the server's fds.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { Cfg, Command as PciCommand, Status } from '../../src/device/pci-config.js';
import * as native from '../../src/native/index.js';
import type { VfioUserClient } from '../../src/vfio-user/client.js';
import {
  Errno,
  IRQ_SET_ACTION_MASK,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_ACTION_UNMASK,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_NONE,
  PciIrq,
  PciRegion,
} from '../../src/vfio-user/constants.js';
import { type Harness, le, Reg, startServer, u16, until } from '../vfio-user/fixture.js';

const EVENTFD_TRIGGER = IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER;
const DISABLE = IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER;
const { EAGAIN } = native;

describe('SET_IRQS over the socket', () => {
  let h: Harness;
  let c: VfioUserClient;
  const mine: number[] = [];
  const efd = () => {
    const fd = native.eventfd();
    mine.push(fd);
    return fd;
  };
  const status = async () => u16(await c.regionRead(PciRegion.CONFIG, Cfg.STATUS, 2), 0);

  before(async () => {
    h = await startServer();
    c = await h.connect();
  });
  after(async () => {
    c.close();
    await h.close();
    for (const fd of mine) native.close(fd);
  });
  beforeEach(async () => {
    // Every test starts with interrupts off and the line low, as after a machine reset.
    for (const index of [0, 1, 2]) await c.setIrqs(index, DISABLE, 0, 0);
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    await c.reset();
  });

  it('INTx: raising the line fires the eventfd once, then auto-masks until UNMASK', async () => {
    const fd = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [fd]);
    assert.equal(h.device.irqs.mode, 'intx');
    await c.regionWrite(0, Reg.IRQ, le([1, 4])); // the device raises INTx
    assert.equal(native.eventfdRead(fd), 1);
    assert.ok((await status()) & Status.INTERRUPT, 'status shows the pending interrupt');
    // Lower and raise again: masked, no second signal.
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    assert.equal((await status()) & Status.INTERRUPT, 0);
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(fd), -EAGAIN, 'auto-masked');
    // QEMU's EOI: DATA_NONE | ACTION_UNMASK. The line is still high → one new signal.
    await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
    assert.equal(native.eventfdRead(fd), 1);
    // Unmask with the line low: nothing.
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 0, 1);
    assert.equal(native.eventfdRead(fd), -EAGAIN);
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(fd), 1);
  });

  it('INTx: a line already high is signalled as soon as the eventfd is installed', async () => {
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    const fd = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [fd]);
    assert.equal(native.eventfdRead(fd), 1);
  });

  it('INTx: the resample eventfd (UNMASK + eventfd, KVM) unmasks when the client writes it', async () => {
    const trigger = efd();
    const resample = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [trigger]);
    await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_UNMASK, 0, 1, [resample]);
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(trigger), 1);
    assert.equal(native.eventfdRead(trigger), -EAGAIN);
    const signals = h.device.irqs.signalCount(PciIrq.INTX);
    native.eventfdWrite(resample, 1); // KVM's EOI on the guest's behalf
    await until(() => h.device.irqs.signalCount(PciIrq.INTX) > signals, 2000, 'resample unmask');
    assert.equal(native.eventfdRead(trigger), 1, 'line still high → signalled again');
  });

  it('INTx: INTX_DISABLE in the command register holds the signal back; status still shows the line', async () => {
    const fd = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [fd]);
    await c.regionWrite(PciRegion.CONFIG, Cfg.COMMAND, le([PciCommand.INTX_DISABLE, 2]));
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(fd), -EAGAIN);
    assert.ok((await status()) & Status.INTERRUPT);
    await c.regionWrite(PciRegion.CONFIG, Cfg.COMMAND, le([0, 2]));
    assert.equal(native.eventfdRead(fd), 1, 'enabled again with the line high');
  });

  it('MSI via DATA_EVENTFD: each vector has its own eventfd; edges, not levels', async () => {
    const fds = [efd(), efd()];
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 2, fds);
    assert.equal(h.device.irqs.mode, 'msi');
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([1, 4]));
    assert.equal(native.eventfdRead(fds[1] as number), 1);
    assert.equal(native.eventfdRead(fds[0] as number), -EAGAIN);
    await c.regionWrite(0, Reg.IRQ, le([1, 4])); // rising edge on vector 0
    await c.regionWrite(0, Reg.IRQ, le([1, 4])); // still high: no new message
    assert.equal(native.eventfdRead(fds[0] as number), 1);
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    await c.regionWrite(0, Reg.IRQ, le([1, 4]));
    assert.equal(native.eventfdRead(fds[0] as number), 1);
    // MSI takes precedence over an installed INTx eventfd.
    await c.regionWrite(0, Reg.IRQ, le([0, 4]));
    const intx = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [intx]);
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([0, 4]));
    assert.equal(native.eventfdRead(fds[0] as number), 1);
    assert.equal(native.eventfdRead(intx), -EAGAIN);
  });

  it('MSI masks: a masked vector stays pending and fires on unmask; DATA_BOOL picks vectors', async () => {
    const fds = [efd(), efd()];
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 2, fds);
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_MASK, 0, 2, null, Uint8Array.of(0, 1)); // mask vector 1 only
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([1, 4]));
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([0, 4]));
    assert.equal(native.eventfdRead(fds[0] as number), 1);
    assert.equal(native.eventfdRead(fds[1] as number), -EAGAIN);
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 1, 1);
    assert.equal(native.eventfdRead(fds[1] as number), 1, 'pending vector delivered');
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK, 1, 1);
    assert.equal(native.eventfdRead(fds[1] as number), -EAGAIN, 'only once');
  });

  it('loopback: DATA_NONE|TRIGGER fires vectors; DATA_BOOL fires where true', async () => {
    const fds = [efd(), efd()];
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 2, fds);
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER, 0, 2);
    assert.deepEqual(
      fds.map((f) => native.eventfdRead(f)),
      [1, 1],
    );
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_BOOL | IRQ_SET_ACTION_TRIGGER, 0, 2, null, Uint8Array.of(1, 0));
    assert.deepEqual(
      fds.map((f) => native.eventfdRead(f)),
      [1, -EAGAIN],
    );
  });

  it('ERR: one eventfd with TRIGGER as QEMU installs it; MASK is EINVAL', async () => {
    const fd = efd();
    await c.setIrqs(PciIrq.ERR, EVENTFD_TRIGGER, 0, 1, [fd]);
    await c.setIrqs(PciIrq.ERR, DISABLE, 0, 1); // loopback fire
    assert.equal(native.eventfdRead(fd), 1);
    await assert.rejects(c.setIrqs(PciIrq.ERR, IRQ_SET_DATA_NONE | IRQ_SET_ACTION_MASK, 0, 1), { errno: Errno.EINVAL });
    await c.setIrqs(PciIrq.ERR, DISABLE, 0, 0);
  });

  it('disable (DATA_NONE|TRIGGER, count 0) closes the server copies of the eventfds', async () => {
    const base = native.fdCount();
    const fds = [efd(), efd()];
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 2, fds);
    assert.equal(native.fdCount(), base + 4, 'ours + the server copies');
    await c.setIrqs(PciIrq.MSI, DISABLE, 0, 0);
    assert.equal(native.fdCount(), base + 2);
    assert.equal(h.device.irqs.mode, 'none');
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([0, 4]));
    assert.equal(native.eventfdRead(fds[0] as number), -EAGAIN);
  });

  it('replacing or de-assigning (DATA_EVENTFD without fds) closes the old eventfd', async () => {
    const base = native.fdCount();
    const a = efd();
    const b = efd();
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 1, [a]);
    assert.equal(native.fdCount(), base + 3);
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 0, 1, [b]);
    assert.equal(native.fdCount(), base + 3, 'the copy of a was closed');
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([0, 4]));
    assert.equal(native.eventfdRead(a), -EAGAIN);
    assert.equal(native.eventfdRead(b), 1);
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1); // no fds: de-assign
    assert.equal(native.fdCount(), base + 2);
    // Vector 1 keeps its own eventfd when vector 0 is de-assigned.
    const v1 = efd();
    await c.setIrqs(PciIrq.MSI, EVENTFD_TRIGGER, 1, 1, [v1]);
    await c.setIrqs(PciIrq.MSI, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER, 0, 1);
    await c.regionWrite(0, Reg.IRQ_VECTOR, le([1, 4]));
    assert.equal(native.eventfdRead(v1), 1);
  });

  it('INTx resample eventfd is closed with the INTx disable', async () => {
    const base = native.fdCount();
    const t = efd();
    const r = efd();
    await c.setIrqs(PciIrq.INTX, EVENTFD_TRIGGER, 0, 1, [t]);
    await c.setIrqs(PciIrq.INTX, IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_UNMASK, 0, 1, [r]);
    assert.equal(native.fdCount(), base + 4);
    await c.setIrqs(PciIrq.INTX, DISABLE, 0, 0);
    assert.equal(native.fdCount(), base + 2);
  });
});
