// The server side of the latency benchmark (bench/latency.ts), run as its own Node process:
// the real VfioUserServer over a minimal PCI device whose only BAR is one trapped 4 KiB memory
// region. A 4-byte read at offset 0 returns a counter that increments on every read, so each
// REGION_READ runs the whole path: socket -> addon reader -> framing -> session dispatch ->
// PciDevice.regionRead -> regionAccess -> RegisterFile.read -> reply -> sendmsg.
//
//
// --raw replaces the server with the bare minimum on the same addon: native.watch() reader mode
// and one JS callback that answers VERSION and REGION_READ straight from the receive buffer
// with native.send() (no Connection, session, codec or device). The gap between it and the C
// floor is the cost of Node + the addon; the gap between it and the full server is ours.
//
// usage: node dist/bench/server-main.js SOCKET [--stats] [--raw]
// Prints "ready" on stdout once listening; exits when the first client disconnects (so
// --cpu-prof and friends write their output). --stats prints GC counts and register reads on stderr.
import { PerformanceObserver } from 'node:perf_hooks';
import { PciDevice } from '../src/device/pci-device.js';
import type { AccessWidth, RegisterFile } from '../src/device/regions.js';
import * as native from '../src/native/index.js';
import { VfioUserServer } from '../src/vfio-user/server.js';

/** One trapped memory BAR: offset 0 is a read counter, everything else reads 0 and ignores writes. */
class CounterDevice extends PciDevice {
  reads = 0;

  constructor() {
    const registers: RegisterFile = {
      read: (offset: number, _width: AccessWidth) => (offset === 0 ? (this.reads = (this.reads + 1) >>> 0) : 0),
      write: () => {},
    };
    super({
      identity: { vendorId: 0x1b36, deviceId: 0x10ff, subsystemVendorId: 0x1af4, subsystemId: 0x1100, classCode: 0xff0000, revision: 1, interruptPin: 0 },
      bars: [{ kind: 'mem32', size: 4096, registers }],
    });
  }

  protected resetDevice(): void {
    this.reads = 0;
  }
}

function main(): void {
  const socketPath = process.argv[2];
  if (!socketPath) {
    process.stderr.write('usage: server-main SOCKET [--stats] [--raw]\n');
    process.exit(1);
  }
  const stats = process.argv.includes('--stats');
  const gcs = new Map<string, { count: number; ms: number }>();
  let observer: PerformanceObserver | null = null;
  if (stats) {
    observer = new PerformanceObserver((list) => {
      for (const e of list.getEntries()) {
        const kind = String((e as unknown as { detail?: { kind?: number } }).detail?.kind ?? e.name);
        const g = gcs.get(kind) ?? { count: 0, ms: 0 };
        g.count++;
        g.ms += e.duration;
        gcs.set(kind, g);
      }
    });
    observer.observe({ entryTypes: ['gc'] });
  }

  const done = (reads: number): void => {
    if (stats) {
      observer?.disconnect();
      const kinds = [...gcs.entries()].map(([k, g]) => `${gcName(k)} ${g.count} (${g.ms.toFixed(1)} ms)`).join(', ');
      process.stderr.write(`server-main: ${reads} register reads; GCs: ${kinds || 'none'}\n`);
    }
    process.exit(0);
  };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => process.exit(0));
  if (process.argv.includes('--raw')) rawServer(socketPath, done);
  else fullServer(socketPath, done);
  process.stdout.write('ready\n');
}

function fullServer(socketPath: string, done: (reads: number) => void): void {
  const device = new CounterDevice();
  const server = new VfioUserServer(socketPath, device, {
    log: (m) => process.stderr.write(`server-main: ${m}\n`),
    onDisconnect: (reason) => {
      void server.close().then(() => {
        if (reason) process.stderr.write(`server-main: client left: ${reason}\n`);
        done(device.reads);
      });
    },
  });
  server.listen();
}

const HDR = 16;
const CMD_VERSION = 1;
const CMD_REGION_READ = 9;
const REPLY = 1;
const FLAG_ERROR = 0x20;

/** The addon-only floor: one client, no framing beyond "answer every complete message". */
function rawServer(socketPath: string, done: (reads: number) => void): void {
  const listenFd = native.listen(socketPath, 1);
  const rx = new Uint8Array(64 * 1024);
  const rxv = new DataView(rx.buffer);
  const tx = new Uint8Array(4096);
  const txv = new DataView(tx.buffer);
  const st = native.newStatus();
  const json = new TextEncoder().encode('{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}\0');
  let reads = 0;
  const acceptPoll = native.poll(listenFd, native.READABLE, () => {
    const fd = native.accept(listenFd);
    if (fd < 0) return;
    native.pollClose(acceptPoll);
    native.close(listenFd);
    const watch = native.watch(
      fd,
      rx,
      st,
      (n) => {
        if (n <= 0) {
          native.watchClose(watch);
          native.close(fd);
          done(reads);
          return;
        }
        let end = (st[native.ST_OFFSET] as number) + n;
        let at = 0;
        while (end - at >= HDR) {
          const size = rxv.getUint32(at + 4, true);
          if (end - at < size) break;
          const cmd = rxv.getUint16(at + 2, true);
          let len = HDR;
          let flags = REPLY;
          if (cmd === CMD_REGION_READ && size === HDR + 16 && rxv.getUint32(at + 28, true) === 4) {
            tx.set(rx.subarray(at + HDR, at + HDR + 16), HDR);
            txv.setUint32(HDR + 16, ++reads, true);
            len = HDR + 20;
          } else if (cmd === CMD_VERSION) {
            txv.setUint32(HDR, 0, true);
            tx.set(json, HDR + 4);
            len = HDR + 4 + json.length;
          } else {
            flags |= FLAG_ERROR;
          }
          txv.setUint16(0, rxv.getUint16(at, true), true);
          txv.setUint16(2, cmd, true);
          txv.setUint32(4, len, true);
          txv.setUint32(8, flags, true);
          txv.setUint32(12, flags & FLAG_ERROR ? 38 : 0, true); // ENOSYS
          if (native.send(fd, tx, 0, len) !== len) throw new Error('raw server: short send');
          at += size;
        }
        if (at > 0) {
          rx.copyWithin(0, at, end);
          end -= at;
        }
        st[native.ST_OFFSET] = end;
      },
      () => {},
    );
  });
}

/** perf_hooks gc kinds: 1 minor (scavenge), 2 major, 4 incremental, 8 weak callbacks. */
function gcName(kind: string): string {
  return ({ '1': 'scavenge', '2': 'mark-sweep', '4': 'incremental', '8': 'weakcb' } as Record<string, string>)[kind] ?? `kind ${kind}`;
}

main();
