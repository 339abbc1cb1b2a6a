// The mediated serial card: one or two 16550A ports on a PCI identity that
// Linux's stock 8250_pci driver binds. With INTx it presents QEMU's PCI serial
// identity (1b36:0002 / 1b36:0003, ports in I/O BAR0); for MSI it presents the
// HPE serial identity (1590:037e, one port in I/O BAR1), the single-port card
// 8250_pci enables MSI for. Each port's host side is a byte stream (the daemon
// attaches a UNIX socket); the card itself knows nothing of sockets.
import { PciDevice } from '../../device/pci-device.js';
import type { AccessWidth, RegisterFile } from '../../device/regions.js';
import { UART_REGISTERS, Uart16550 } from './uart16550.js';

export type SerialIrqMode = 'intx' | 'msi';

export interface SerialCardOptions {
  ports: 1 | 2;
  irq?: SerialIrqMode;
}

/** The host side of one port. */
export class SerialPort {
  readonly uart: Uart16550;
  private out: number[] = [];
  private flushScheduled = false;
  private readonly outputListeners = new Set<(bytes: Buffer) => void>();
  private readonly readyListeners = new Set<() => void>();

  constructor(readonly index: number) {
    this.uart = new Uart16550({
      transmit: (bytes) => this.collect(bytes),
      ready: () => {
        for (const l of this.readyListeners) l();
      },
    });
  }

  /** Guest output arrives here in batches (one per event-loop turn). */
  onOutput(listener: (bytes: Buffer) => void): () => void {
    this.outputListeners.add(listener);
    return () => this.outputListeners.delete(listener);
  }

  /** Called when the guest drained enough input for the host to resume sending. */
  onReady(listener: () => void): () => void {
    this.readyListeners.add(listener);
    return () => this.readyListeners.delete(listener);
  }

  /** Bytes for the guest; false means "pause until onReady". */
  input(bytes: Uint8Array): boolean {
    return this.uart.receive(bytes);
  }

  private collect(bytes: Uint8Array): void {
    for (const b of bytes) this.out.push(b);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.out.length === 0) return;
    const chunk = Buffer.from(this.out);
    this.out = [];
    for (const l of this.outputListeners) l(chunk);
  }
}

const RED_HAT = 0x1b36;
const HP_3PAR = 0x1590;
const HPE_PCI_SERIAL = 0x037e;
const CLASS_SERIAL_16550 = 0x070002;

export class SerialCard extends PciDevice {
  readonly ports: SerialPort[];
  readonly irqMode: SerialIrqMode;

  constructor(options: SerialCardOptions) {
    const irq = options.irq ?? 'intx';
    if (irq === 'msi' && options.ports !== 1) {
      throw new RangeError('MSI needs a one-port card: the stock 8250_pci driver enables MSI only for the single-port HPE identity');
    }
    const ports = Array.from({ length: options.ports }, (_, i) => new SerialPort(i));
    const registers: RegisterFile = {
      read: (offset, width) => SerialCard.readRegs(ports, offset, width),
      write: (offset, width, value) => SerialCard.writeRegs(ports, offset, width, value),
    };
    const bar = { kind: 'io' as const, size: UART_REGISTERS * (options.ports === 2 ? 2 : 1), registers };
    super({
      identity:
        irq === 'msi'
          ? {
              vendorId: HP_3PAR,
              deviceId: HPE_PCI_SERIAL,
              subsystemVendorId: HP_3PAR,
              subsystemId: HPE_PCI_SERIAL,
              classCode: CLASS_SERIAL_16550,
              revision: 1,
              interruptPin: 1,
            }
          : {
              vendorId: RED_HAT,
              deviceId: options.ports === 2 ? 0x0003 : 0x0002,
              subsystemVendorId: 0x1af4,
              subsystemId: 0x1100,
              classCode: CLASS_SERIAL_16550,
              revision: 1,
              interruptPin: 1,
            },
      bars: irq === 'msi' ? [null, bar] : [bar],
      msi: 1,
    });
    this.ports = ports;
    this.irqMode = irq;
    for (const p of ports) p.uart.onIrq = () => this.interrupt(ports.some((q) => q.uart.irq));
  }

  // Registers are bytes; a wider access covers consecutive registers.
  private static readRegs(ports: SerialPort[], offset: number, width: AccessWidth): number {
    let v = 0;
    for (let i = width - 1; i >= 0; i--) {
      const at = offset + i;
      const port = ports[at >> 3];
      v = v * 256 + (port ? port.uart.read(at & 7) : 0xff);
    }
    return v;
  }

  private static writeRegs(ports: SerialPort[], offset: number, width: AccessWidth, value: number): void {
    for (let i = 0; i < width; i++) {
      const at = offset + i;
      ports[at >> 3]?.uart.write(at & 7, (value >>> (8 * i)) & 0xff);
    }
  }

  protected resetDevice(): void {
    for (const p of this.ports ?? []) p.uart.reset();
  }
}
