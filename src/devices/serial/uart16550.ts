// A 16550A UART as the Linux 8250 driver sees it: eight registers, 16-byte
// FIFOs, the interrupt identification priorities, and the THRE interrupt
// semantics the driver probes at startup. Transmission is instantaneous (the
// byte goes to the host side at once); reception drains a host-side queue into
// the FIFO as the guest reads, so a burst never overruns and nothing is lost.

const RBR_THR = 0;
const IER = 1;
const IIR_FCR = 2;
const LCR = 3;
const MCR = 4;
const LSR = 5;
const MSR = 6;
const SCR = 7;

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IER_RLSI = 0x04;
const IER_MSI = 0x08;

const IIR_NO_INT = 0x01;
const IIR_MSI = 0x00;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_RLSI = 0x06;
const IIR_CTI = 0x0c;
const IIR_FIFO_ENABLED = 0xc0;

const FCR_ENABLE = 0x01;
const FCR_CLEAR_RCVR = 0x02;
const FCR_CLEAR_XMIT = 0x04;

const LCR_DLAB = 0x80;

const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;

const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;

const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

const FIFO_SIZE = 16;
const TRIGGER_LEVELS = [1, 4, 8, 14];

/** Where the UART's host side goes: bytes out, and flow control for bytes in. */
export interface UartHost {
  /** Bytes the guest transmitted. */
  transmit(bytes: Uint8Array): void;
  /** The receive queue drained below its low-water mark: the host may send more. */
  ready(): void;
}

export class Uart16550 {
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private lsr = LSR_THRE | LSR_TEMT;
  private msr = 0;
  private scr = 0;
  private dll = 0x0c; // 9600 baud with the standard 1.8432 MHz clock
  private dlm = 0;
  private fcr = 0;
  private thrPending = false;
  private readonly fifo = new Uint8Array(FIFO_SIZE);
  private fifoHead = 0;
  private fifoCount = 0;
  /** Host bytes waiting for room in the FIFO. */
  private queue: Uint8Array[] = [];
  private queued = 0;
  /** receive() told the host to pause; ready() is owed once the queue drains below half. */
  private hostPaused = false;
  /** The host side is connected (drives DCD/DSR/CTS). */
  private carrier = true;
  /** Current state of the interrupt output. */
  irq = false;
  onIrq: (level: boolean) => void = () => {};
  bytesTransmitted = 0;
  bytesReceived = 0;
  /** Above this many queued host bytes, the host should stop sending. */
  static readonly HIGH_WATER = 64 * 1024;

  constructor(private readonly host: UartHost) {
    this.reset();
  }

  reset(): void {
    this.ier = 0;
    this.lcr = 0;
    this.mcr = 0;
    this.lsr = LSR_THRE | LSR_TEMT;
    this.scr = 0;
    this.dll = 0x0c;
    this.dlm = 0;
    this.fcr = 0;
    this.thrPending = false;
    this.fifoHead = 0;
    this.fifoCount = 0;
    this.refill(); // queued host bytes survive a reset: DR must show them
    this.updateMsr(false);
    this.update();
  }

  /** Line settings as programmed by the guest (for status displays). */
  get settings(): { divisor: number; baud: number; lcr: number; fifo: boolean } {
    const divisor = this.dlm * 256 + this.dll;
    return { divisor, baud: divisor ? Math.floor(115200 / divisor) : 0, lcr: this.lcr, fifo: (this.fcr & FCR_ENABLE) !== 0 };
  }

  /** Bytes waiting to enter the guest (FIFO plus host queue). */
  get backlog(): number {
    return this.fifoCount + this.queued;
  }

  setCarrier(on: boolean): void {
    if (this.carrier === on) return;
    this.carrier = on;
    this.updateMsr(true);
    this.update();
  }

  /** Queues host bytes for the guest. Returns false once the host should pause. */
  receive(bytes: Uint8Array): boolean {
    if (bytes.length) {
      this.queue.push(bytes);
      this.queued += bytes.length;
      this.refill();
      this.update();
    }
    if (this.queued >= Uart16550.HIGH_WATER) this.hostPaused = true;
    return !this.hostPaused;
  }

  private get capacity(): number {
    return this.fcr & FCR_ENABLE ? FIFO_SIZE : 1;
  }

  private refill(): void {
    const cap = this.capacity;
    while (this.fifoCount < cap && this.queue.length) {
      const head = this.queue[0] as Uint8Array;
      const n = Math.min(cap - this.fifoCount, head.length);
      for (let i = 0; i < n; i++) this.fifo[(this.fifoHead + this.fifoCount + i) % FIFO_SIZE] = head[i] as number;
      this.fifoCount += n;
      this.queued -= n;
      if (n === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(n);
    }
    if (this.fifoCount) this.lsr |= LSR_DR;
    else this.lsr &= ~LSR_DR;
    // Checked on every refill, not only on RBR reads: an FCR clear can also cross the mark,
    // and a host that misses ready() stays paused forever.
    if (this.hostPaused && this.queued < Uart16550.HIGH_WATER / 2) {
      this.hostPaused = false;
      this.host.ready();
    }
  }

  private updateMsr(delta: boolean): void {
    const old = this.msr;
    let lines: number;
    if (this.mcr & MCR_LOOP) {
      lines =
        (this.mcr & MCR_RTS ? MSR_CTS : 0) | (this.mcr & MCR_DTR ? MSR_DSR : 0) | (this.mcr & MCR_OUT1 ? MSR_RI : 0) | (this.mcr & MCR_OUT2 ? MSR_DCD : 0);
    } else lines = this.carrier ? MSR_CTS | MSR_DSR | MSR_DCD : 0;
    let deltas = old & 0x0f;
    if (delta) {
      const changed = (old ^ lines) & 0xf0;
      if (changed & MSR_CTS) deltas |= MSR_DCTS;
      if (changed & MSR_DSR) deltas |= MSR_DDSR;
      if (changed & MSR_DCD) deltas |= MSR_DDCD;
    }
    this.msr = lines | deltas;
  }

  /** The interrupt identification: the highest-priority pending source. */
  private identify(): number {
    if (this.ier & IER_RLSI && this.lsr & LSR_OE) return IIR_RLSI;
    if (this.ier & IER_RDI && this.fifoCount > 0) {
      const trigger = this.fcr & FCR_ENABLE ? (TRIGGER_LEVELS[this.fcr >> 6] as number) : 1;
      return this.fifoCount >= trigger ? IIR_RDI : IIR_CTI;
    }
    if (this.ier & IER_THRI && this.thrPending) return IIR_THRI;
    if (this.ier & IER_MSI && this.msr & 0x0f) return IIR_MSI;
    return IIR_NO_INT;
  }

  private update(): void {
    const level = this.identify() !== IIR_NO_INT;
    if (level !== this.irq) {
      this.irq = level;
      this.onIrq(level);
    }
  }

  read(offset: number): number {
    let v: number;
    switch (offset & 7) {
      case RBR_THR:
        if (this.lcr & LCR_DLAB) {
          v = this.dll;
          break;
        }
        v = 0;
        if (this.fifoCount) {
          v = this.fifo[this.fifoHead] as number;
          this.fifoHead = (this.fifoHead + 1) % FIFO_SIZE;
          this.fifoCount--;
          this.bytesReceived++;
          this.refill();
        }
        break;
      case IER:
        v = this.lcr & LCR_DLAB ? this.dlm : this.ier;
        break;
      case IIR_FCR: {
        const id = this.identify();
        // Reading IIR acknowledges a THRE interrupt.
        if (id === IIR_THRI) this.thrPending = false;
        v = id | (this.fcr & FCR_ENABLE ? IIR_FIFO_ENABLED : 0);
        break;
      }
      case LCR:
        v = this.lcr;
        break;
      case MCR:
        v = this.mcr;
        break;
      case LSR:
        v = this.lsr;
        this.lsr &= ~LSR_OE;
        break;
      case MSR:
        v = this.msr;
        this.msr &= 0xf0;
        break;
      case SCR:
        v = this.scr;
        break;
      default:
        v = 0xff;
    }
    this.update();
    return v;
  }

  write(offset: number, value: number): void {
    const v = value & 0xff;
    switch (offset & 7) {
      case RBR_THR:
        if (this.lcr & LCR_DLAB) {
          this.dll = v;
          break;
        }
        this.transmit(v);
        break;
      case IER:
        if (this.lcr & LCR_DLAB) {
          this.dlm = v;
          break;
        }
        {
          const old = this.ier;
          this.ier = v & 0x0f;
          // Enabling THRI while the holder is empty raises THRE at once (16550 behaviour the driver tests).
          if (!(old & IER_THRI) && this.ier & IER_THRI && this.lsr & LSR_THRE) this.thrPending = true;
        }
        break;
      case IIR_FCR: {
        const enabling = (v & FCR_ENABLE) !== (this.fcr & FCR_ENABLE);
        if (v & FCR_CLEAR_RCVR || enabling) {
          // Clearing the receiver FIFO drops only what reached the FIFO; queued host bytes follow.
          this.fifoHead = 0;
          this.fifoCount = 0;
        }
        if (v & FCR_CLEAR_XMIT) {
          this.lsr |= LSR_THRE | LSR_TEMT;
          this.thrPending = true;
        }
        this.fcr = v & 0xc9;
        this.refill();
        break;
      }
      case LCR:
        this.lcr = v;
        break;
      case MCR: {
        this.mcr = v & 0x1f;
        this.updateMsr(true);
        break;
      }
      case LSR:
      case MSR:
        break; // read-only on a 16550A
      case SCR:
        this.scr = v;
    }
    this.update();
  }

  private transmit(byte: number): void {
    this.thrPending = false;
    this.bytesTransmitted++;
    if (this.mcr & MCR_LOOP) {
      this.receive(Uint8Array.of(byte));
    } else {
      this.txByte[0] = byte;
      this.host.transmit(this.txByte);
    }
    // The byte left at once: the holding register is empty again.
    this.lsr |= LSR_THRE | LSR_TEMT;
    this.thrPending = true;
  }

  private readonly txByte = new Uint8Array(1);
}

export const UART_REGISTERS = 8;
