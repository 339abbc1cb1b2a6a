// A VNC (RFB over TCP) listener for one display. Viewers connected over a
// WebSocket join the same display through addWebSocket().
import { createServer, type Server } from 'node:net';
import type { WebSocket } from 'ws';
import { listenFirstFree } from '../../util/listen.js';
import type { RfbDisplay } from './display.js';
import { RfbSession, type RfbTransport } from './session.js';
import { tcpTransport, wsTransport } from './transports.js';

export interface VncServerOptions {
  host: string;
  /** 0 picks the first free port from 5900 upwards. */
  port: number;
  password: string | null;
  /** Admits viewers in view-only mode (needs `password` too). */
  viewPassword?: string | null;
  log?: (m: string) => void;
  /** Drop viewers that have not completed the handshake after this long (default 10 s). */
  handshakeTimeoutMs?: number;
}

export class VncServer {
  private server: Server | null = null;
  address: { host: string; port: number } | null = null;

  constructor(
    readonly display: RfbDisplay,
    private readonly options: VncServerOptions,
  ) {}

  async listen(): Promise<{ host: string; port: number }> {
    const { host } = this.options;
    const candidates = this.options.port ? [this.options.port] : Array.from({ length: 100 }, (_, i) => 5900 + i);
    const server = createServer({ noDelay: true }, (sock) => this.session(tcpTransport(sock), false));
    const port = await listenFirstFree(server, host, candidates, candidates.length > 1 ? 'no free VNC port between 5900 and 5999' : undefined);
    this.server = server;
    this.address = { host, port };
    return this.address;
  }

  /** A browser viewer: the same RFB session over a WebSocket. */
  addWebSocket(ws: WebSocket, remote: string, viewOnly: boolean): RfbSession {
    return this.session(wsTransport(ws, remote), viewOnly);
  }

  private session(transport: RfbTransport, viewOnly: boolean): RfbSession {
    const s = new RfbSession(transport, this.display, {
      password: this.options.password,
      viewPassword: this.options.viewPassword ?? null,
      viewOnly,
      log: this.options.log,
      handshakeTimeoutMs: this.options.handshakeTimeoutMs,
    });
    this.display.attach(s);
    return s;
  }

  async close(): Promise<void> {
    this.display.close();
    const s = this.server;
    this.server = null;
    if (s) await new Promise<void>((r) => s.close(() => r()));
  }
}
