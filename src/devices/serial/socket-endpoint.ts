// Binds one serial port's host side to a UNIX stream socket: what the guest
// writes to its ttyS goes to every connected client; what clients write goes
// into the guest. Output written while nobody listens is kept (up to a
// backlog limit) for the next client; a client that stops reading is dropped
// rather than buffered without bound.
import { chmodSync, unlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { listenOn } from '../../util/listen.js';
import type { SerialPort } from './serial-card.js';

const BACKLOG_LIMIT = 64 * 1024;
const CLIENT_BUFFER_LIMIT = 1024 * 1024;

export class SerialSocketEndpoint {
  private server: Server | null = null;
  private readonly clients = new Set<Socket>();
  private backlog: Buffer[] = [];
  private backlogBytes = 0;
  private paused = false;
  private readonly unsubscribe: (() => void)[] = [];

  constructor(
    readonly port: SerialPort,
    readonly path: string,
    private readonly log: (m: string) => void = () => {},
  ) {}

  async start(): Promise<void> {
    try {
      unlinkSync(this.path);
    } catch {
      // no stale socket
    }
    this.unsubscribe.push(this.port.onOutput((b) => this.output(b)));
    this.unsubscribe.push(
      this.port.onReady(() => {
        this.paused = false;
        for (const c of this.clients) c.resume();
      }),
    );
    const server = createServer((c) => this.accept(c));
    this.server = server;
    await listenOn(server, this.path);
    chmodSync(this.path, 0o660);
  }

  get clientCount(): number {
    return this.clients.size;
  }

  private accept(c: Socket): void {
    this.clients.add(c);
    if (this.backlogBytes) {
      for (const b of this.backlog) c.write(b);
      this.backlog = [];
      this.backlogBytes = 0;
    }
    if (this.paused) c.pause();
    c.on('data', (d: Buffer) => {
      if (!this.port.input(d)) {
        this.paused = true;
        for (const x of this.clients) x.pause();
      }
    });
    c.on('error', () => {});
    c.on('close', () => this.clients.delete(c));
  }

  private output(bytes: Buffer): void {
    if (this.clients.size === 0) {
      this.backlog.push(bytes);
      this.backlogBytes += bytes.length;
      while (this.backlogBytes > BACKLOG_LIMIT && this.backlog.length > 1) {
        this.backlogBytes -= (this.backlog.shift() as Buffer).length;
      }
      return;
    }
    for (const c of this.clients) {
      if (c.writableLength > CLIENT_BUFFER_LIMIT) {
        this.log(`serial port ${this.port.index}: dropping a host client that stopped reading`);
        c.destroy();
        continue;
      }
      c.write(bytes);
    }
  }

  async stop(): Promise<void> {
    for (const u of this.unsubscribe) u();
    for (const c of this.clients) c.destroy();
    this.clients.clear();
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
