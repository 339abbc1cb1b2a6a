// Listens on one UNIX socket for one device and serves one client at a time
// (QEMU attaches a device through exactly one connection and never reconnects,
// but a restarted VM connects again to the same socket).
import { unlinkSync } from 'node:fs';
import * as native from '../native/index.js';
import type { VfioUserBackend } from './backend.js';
import { ServerSession, type SessionOptions } from './session.js';

export interface ServerOptions extends SessionOptions {
  onConnect?: (session: ServerSession) => void;
  onDisconnect?: (reason: string | null) => void;
}

export class VfioUserServer {
  private listenFd = -1;
  private poll: native.PollHandle | null = null;
  private current: ServerSession | null = null;
  private readonly log: (m: string) => void;

  constructor(
    readonly socketPath: string,
    private readonly backend: VfioUserBackend,
    private readonly options: ServerOptions = {},
  ) {
    this.log = options.log ?? (() => {});
  }

  get session(): ServerSession | null {
    return this.current;
  }

  listen(): void {
    if (this.listenFd >= 0) return;
    this.listenFd = native.listen(this.socketPath, 8);
    this.poll = native.poll(this.listenFd, native.READABLE, () => this.acceptAll());
  }

  private acceptAll(): void {
    for (;;) {
      const fd = native.accept(this.listenFd);
      if (fd < 0) {
        if (fd !== -native.EAGAIN && fd !== -native.EINTR) this.log(`accept failed: errno ${-fd}`);
        return;
      }
      if (this.current && !this.current.isClosed) {
        this.log('refusing a second client: the device is already attached');
        native.close(fd);
        continue;
      }
      const s = new ServerSession(fd, this.backend, this.options);
      this.current = s;
      this.log('client connected');
      this.options.onConnect?.(s);
      void s.closed.then((reason) => {
        this.log(reason ? `client disconnected: ${reason}` : 'client disconnected');
        if (this.current === s) this.current = null;
        this.options.onDisconnect?.(reason);
      });
    }
  }

  /** Stops listening, drops the client and removes the socket file. */
  async close(): Promise<void> {
    if (this.poll) native.pollClose(this.poll);
    this.poll = null;
    if (this.listenFd >= 0) {
      native.close(this.listenFd);
      this.listenFd = -1;
      try {
        unlinkSync(this.socketPath);
      } catch {
        // already gone
      }
    }
    const s = this.current;
    if (s && !s.isClosed) {
      s.close('server shutting down');
      await s.closed;
    }
  }
}
