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
        if (fd === -native.EMFILE && this.poll) {
          // Out of fds: stop accepting for a moment instead of spinning on readiness.
          this.log('accept failed: too many open files; pausing for 100 ms');
          native.pollUpdate(this.poll, 0);
          setTimeout(() => this.poll && native.pollUpdate(this.poll, native.READABLE), 100).unref();
        } else if (fd !== -native.EAGAIN && fd !== -native.EINTR) this.log(`accept failed: errno ${-fd}`);
        return;
      }
      if (this.current && !this.current.isClosed) {
        // A restarted VMM can connect before we have read the old connection's EOF:
        // hold the newcomer briefly and refuse it only if the old client really stays.
        if (this.pendingFd >= 0) native.close(this.pendingFd);
        this.pendingFd = fd;
        clearTimeout(this.pendingTimer);
        this.pendingTimer = setTimeout(() => {
          if (this.pendingFd < 0) return;
          this.log('refusing a second client: the device is already attached');
          native.close(this.pendingFd);
          this.pendingFd = -1;
        }, 1000).unref();
        continue;
      }
      this.adopt(fd);
    }
  }

  private pendingFd = -1;
  private pendingTimer: NodeJS.Timeout | undefined;

  private adopt(fd: number): void {
    const s = new ServerSession(fd, this.backend, this.options);
    this.current = s;
    this.log('client connected');
    this.options.onConnect?.(s);
    void s.closed.then((reason) => {
      this.log(reason ? `client disconnected: ${reason}` : 'client disconnected');
      if (this.current === s) this.current = null;
      this.options.onDisconnect?.(reason);
      if (this.pendingFd >= 0 && this.listenFd >= 0) {
        const next = this.pendingFd;
        this.pendingFd = -1;
        clearTimeout(this.pendingTimer);
        this.adopt(next);
      }
    });
  }

  /** Stops listening, drops the client and removes the socket file. */
  async close(): Promise<void> {
    clearTimeout(this.pendingTimer);
    if (this.pendingFd >= 0) native.close(this.pendingFd);
    this.pendingFd = -1;
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
