// Interrupts of a PCI device as VFIO models them: per index (INTx, MSI, MSI-X,
// ERR, REQ) a number of vectors, each signalled through an eventfd the client
// installed with SET_IRQS. INTx is level-triggered and auto-masked: after one
// signal it stays masked until the client unmasks it (QEMU does on EOI).
import * as native from '../native/index.js';
import type { IrqInfo, SetIrqsRequest } from '../vfio-user/backend.js';
import { VfioError } from '../vfio-user/backend.js';
import {
  Errno,
  IRQ_INFO_AUTOMASKED,
  IRQ_INFO_EVENTFD,
  IRQ_INFO_MASKABLE,
  IRQ_INFO_NORESIZE,
  IRQ_SET_ACTION_MASK,
  IRQ_SET_ACTION_TRIGGER,
  IRQ_SET_ACTION_UNMASK,
  IRQ_SET_DATA_BOOL,
  IRQ_SET_DATA_EVENTFD,
  IRQ_SET_DATA_NONE,
  PCI_NUM_IRQS,
  PciIrq,
} from '../vfio-user/constants.js';

export interface IrqLayout {
  intx: boolean;
  msi: number;
  msix: number;
  err: boolean;
  req: boolean;
}

class Vector {
  fd = -1;
  masked = false;
  pending = false;
  /** INTx resample/unmask notifier (UNMASK + eventfd) and its poller. */
  unmaskFd = -1;
  unmaskPoll: native.PollHandle | null = null;
  signals = 0;
}

const INDEX_NAMES = ['INTx', 'MSI', 'MSI-X', 'ERR', 'REQ'];

export class IrqController {
  private readonly vectors: Vector[][];
  private intxLevel = false;
  /** Set by the config space when the guest sets INTX_DISABLE in the command register. */
  intxDisabled = false;
  /** Called when the INTx line as seen by the guest changes (status register bit). */
  onIntxStatus: (asserted: boolean) => void = () => {};
  /** Whether MSI-X vector v is masked in the guest-visible table (set by the device model). */
  msixMasked: (v: number) => boolean = () => false;
  msixPending: (v: number, pending: boolean) => void = () => {};

  constructor(readonly layout: IrqLayout) {
    const counts = [layout.intx ? 1 : 0, layout.msi, layout.msix, layout.err ? 1 : 0, layout.req ? 1 : 0];
    this.vectors = counts.map((n) => Array.from({ length: n }, () => new Vector()));
  }

  private count(index: number): number {
    return this.vectors[index]?.length ?? 0;
  }

  info(index: number): IrqInfo {
    if (!Number.isInteger(index) || index < 0 || index >= PCI_NUM_IRQS) throw new VfioError(Errno.EINVAL, `IRQ index ${index} out of range`);
    const count = this.count(index);
    if (count === 0) return { flags: 0, count: 0 };
    let flags = IRQ_INFO_EVENTFD;
    if (index === PciIrq.INTX) flags |= IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED;
    else if (index === PciIrq.MSI || index === PciIrq.MSIX) flags |= IRQ_INFO_NORESIZE | IRQ_INFO_MASKABLE;
    return { flags, count };
  }

  /** Which index currently delivers the device's interrupts. */
  get mode(): 'msix' | 'msi' | 'intx' | 'none' {
    if (this.vectors[PciIrq.MSIX]?.some((v) => v.fd >= 0)) return 'msix';
    if (this.vectors[PciIrq.MSI]?.some((v) => v.fd >= 0)) return 'msi';
    const intx = this.vectors[PciIrq.INTX]?.[0];
    if (intx && intx.fd >= 0) return 'intx';
    return 'none';
  }

  /** Total signals sent per index (for statistics and tests). */
  signalCount(index: number): number {
    let n = 0;
    for (const v of this.vectors[index] ?? []) n += v.signals;
    return n;
  }

  /** Validates and applies a SET_IRQS request. On throw nothing was kept (the caller closes fds). */
  set(req: SetIrqsRequest): void {
    const { index, start, count, flags } = req;
    if (!Number.isInteger(index) || index < 0 || index >= PCI_NUM_IRQS) throw new VfioError(Errno.EINVAL, `IRQ index ${index} out of range`);
    const n = this.count(index);
    const name = INDEX_NAMES[index];
    const data = flags & (IRQ_SET_DATA_NONE | IRQ_SET_DATA_BOOL | IRQ_SET_DATA_EVENTFD);
    const action = flags & (IRQ_SET_ACTION_MASK | IRQ_SET_ACTION_UNMASK | IRQ_SET_ACTION_TRIGGER);
    // DATA_NONE + TRIGGER with count 0 disables the whole index.
    if (action === IRQ_SET_ACTION_TRIGGER && data === IRQ_SET_DATA_NONE && count === 0) {
      if (n === 0 && start !== 0) throw new VfioError(Errno.EINVAL, `${name} has no vectors`);
      this.disable(index);
      return;
    }
    if (n === 0) throw new VfioError(Errno.EINVAL, `${name} is not supported by this device`);
    if (count === 0 || start >= n || start + count > n) throw new VfioError(Errno.EINVAL, `${name} vectors ${start}+${count} exceed ${n}`);
    if ((index === PciIrq.ERR || index === PciIrq.REQ) && action !== IRQ_SET_ACTION_TRIGGER) {
      throw new VfioError(Errno.EINVAL, `${name} supports only TRIGGER`);
    }
    const vs = this.vectors[index] as Vector[];
    if (action === IRQ_SET_ACTION_TRIGGER) {
      if (data === IRQ_SET_DATA_EVENTFD) {
        if (req.fds.length === 0) {
          for (let i = start; i < start + count; i++) this.assign(vs[i] as Vector, -1);
          return;
        }
        for (const fd of req.fds) if (!Number.isInteger(fd) || fd < 0) throw new VfioError(Errno.EBADF, 'bad eventfd');
        for (let i = 0; i < count; i++) this.assign(vs[start + i] as Vector, req.fds[i] as number);
        // An INTx line that is already high must be signalled once a listener exists.
        if (index === PciIrq.INTX) this.updateIntx();
        return;
      }
      // Loopback: fire the vectors (DATA_NONE: all; DATA_BOOL: where true).
      for (let i = 0; i < count; i++) {
        if (data === IRQ_SET_DATA_BOOL && !req.bools?.[i]) continue;
        this.fire(index, start + i);
      }
      return;
    }
    // MASK / UNMASK
    if (data === IRQ_SET_DATA_EVENTFD) {
      if (action !== IRQ_SET_ACTION_UNMASK || index !== PciIrq.INTX) {
        throw new VfioError(Errno.EINVAL, `${name}: eventfd notifiers exist only for INTx unmask`);
      }
      this.setUnmaskNotifier(vs[0] as Vector, req.fds.length ? (req.fds[0] as number) : -1);
      return;
    }
    for (let i = 0; i < count; i++) {
      if (data === IRQ_SET_DATA_BOOL && !req.bools?.[i]) continue;
      if (action === IRQ_SET_ACTION_MASK) (vs[start + i] as Vector).masked = true;
      else this.unmask(index, start + i);
    }
  }

  private assign(v: Vector, fd: number): void {
    if (v.fd >= 0 && v.fd !== fd) native.close(v.fd);
    v.fd = fd;
  }

  private setUnmaskNotifier(v: Vector, fd: number): void {
    if (v.unmaskPoll) native.pollClose(v.unmaskPoll);
    if (v.unmaskFd >= 0) native.close(v.unmaskFd);
    v.unmaskPoll = null;
    v.unmaskFd = fd;
    if (fd < 0) return;
    v.unmaskPoll = native.poll(fd, native.READABLE, () => {
      native.eventfdRead(fd);
      this.unmask(PciIrq.INTX, 0);
    });
  }

  private unmask(index: number, i: number): void {
    const v = this.vectors[index]?.[i];
    if (!v) return;
    v.masked = false;
    if (index === PciIrq.INTX) this.updateIntx();
    else if (v.pending) {
      v.pending = false;
      if (index === PciIrq.MSIX) this.msixPending(i, false); // the PBA bit clears once the message goes out
      this.fire(index, i);
    }
  }

  private disable(index: number): void {
    for (const v of this.vectors[index] ?? []) {
      this.assign(v, -1);
      if (index === PciIrq.INTX) this.setUnmaskNotifier(v, -1);
      v.masked = false;
      v.pending = false;
    }
  }

  private signal(v: Vector): boolean {
    if (v.fd < 0) return false;
    const r = native.eventfdWrite(v.fd, 1);
    if (r < 0 && r !== -native.EAGAIN) return false;
    v.signals++;
    return true;
  }

  /** Edge-signals one MSI/MSI-X/ERR/REQ vector, honouring masks. */
  fire(index: number, i = 0): boolean {
    const v = this.vectors[index]?.[i];
    if (!v) return false;
    if (index === PciIrq.INTX) {
      // A loopback trigger of INTx behaves as a pulse.
      return this.signal(v);
    }
    const tableMasked = index === PciIrq.MSIX && this.msixMasked(i);
    if (v.masked || tableMasked) {
      v.pending = true;
      if (index === PciIrq.MSIX) this.msixPending(i, true);
      return false;
    }
    return this.signal(v);
  }

  /**
   * The device's interrupt request for vector `i`: MSI-X or MSI when the client
   * enabled them, else the INTx line (`level` true asserts, false deasserts).
   */
  request(level: boolean, i = 0): void {
    const mode = this.mode;
    const was = this.requested[i] ?? false;
    this.requested[i] = level;
    if (mode === 'msix' || mode === 'msi') {
      // Message interrupts are edges: one message per rising request.
      if (level && !was) this.fire(mode === 'msix' ? PciIrq.MSIX : PciIrq.MSI, i);
      return;
    }
    this.setIntx(level);
  }

  private readonly requested: boolean[] = [];

  setIntx(level: boolean): void {
    if (this.intxLevel === level) return;
    this.intxLevel = level;
    this.updateIntx();
  }

  get intxAsserted(): boolean {
    return this.intxLevel;
  }

  /** Signals INTx when the line is high, enabled and unmasked; then auto-masks. */
  updateIntx(): void {
    const v = this.vectors[PciIrq.INTX]?.[0];
    const active = this.intxLevel && !this.intxDisabled;
    this.onIntxStatus(this.intxLevel);
    if (!v || !active || v.masked) return;
    if (this.signal(v)) v.masked = true;
  }

  /** Closes every eventfd (client gone) and forgets masks; the line level is device state and stays. */
  releaseAll(): void {
    for (let i = 0; i < PCI_NUM_IRQS; i++) this.disable(i);
  }

  /** Reset: interrupts off, line low. Eventfds stay installed (QEMU re-enables after reset itself). */
  reset(): void {
    this.intxLevel = false;
    this.requested.length = 0;
    this.intxDisabled = false;
    for (const vs of this.vectors)
      for (const v of vs) {
        v.masked = false;
        v.pending = false;
      }
    this.onIntxStatus(false);
  }
}
