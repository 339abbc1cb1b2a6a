// Client side of the management socket, used by the CLI, tests and consumers.
import * as native from '../native/index.js';
import { isError } from '../vfio-user/codec.js';
import { Connection } from '../vfio-user/connection.js';
import { CONTROL_CMD, type ControlErrorBody, decodeControl, encodeControl, KIND_EVENT, KIND_REQUEST, MAX_CONTROL_MESSAGE } from './control-protocol.js';

export class ControlError extends Error {
  constructor(
    readonly code: string,
    readonly errno: number,
    message: string,
  ) {
    super(message);
  }
}

interface Waiter {
  resolve: (v: { result: unknown; fds: number[] }) => void;
  reject: (e: Error) => void;
}

export class ControlClient {
  private readonly conn: Connection;
  private nextId = 1;
  private readonly waiters = new Map<number, Waiter>();
  private readonly eventListeners = new Set<(e: unknown) => void>();
  private closedReason: string | null | undefined;

  constructor(path: string) {
    let fd: number;
    try {
      fd = native.connect(path);
    } catch (e) {
      throw new ControlError('ENOENT', 2, `cannot reach the mediated daemon at ${path}: ${(e as Error).message}`);
    }
    this.conn = new Connection(
      fd,
      {
        onMessage: (h, p, fds) => {
          if (h.cmd !== CONTROL_CMD) return;
          if ((h.flags & 0xf) === KIND_EVENT) {
            const ev = decodeControl(p);
            for (const l of this.eventListeners) l(ev);
            for (const f of fds) native.close(f);
            return;
          }
          const w = this.waiters.get(h.id);
          if (!w) {
            for (const f of fds) native.close(f);
            return;
          }
          this.waiters.delete(h.id);
          const body = decodeControl(p) as { result?: unknown } & Partial<ControlErrorBody>;
          if (isError(h.flags)) w.reject(new ControlError(body.code ?? 'EIO', body.errno ?? 5, body.message ?? 'error'));
          else w.resolve({ result: body.result, fds: [...fds] });
        },
        onOversized: () => {},
        onClose: (reason) => {
          this.closedReason = reason;
          for (const w of this.waiters.values()) w.reject(new ControlError('ECONNRESET', 104, `daemon connection closed${reason ? `: ${reason}` : ''}`));
          this.waiters.clear();
        },
      },
      { maxMessageSize: MAX_CONTROL_MESSAGE },
    );
  }

  /** Calls an operation; resolves with its result and any fds the daemon passed. */
  callWithFds(op: string, args: Record<string, unknown> = {}): Promise<{ result: unknown; fds: number[] }> {
    if (this.closedReason !== undefined) return Promise.reject(new ControlError('ECONNRESET', 104, 'daemon connection closed'));
    const id = this.nextId;
    this.nextId = (this.nextId % 0xffff) + 1;
    const msg = encodeControl(id, KIND_REQUEST, { op, args });
    return new Promise((resolve, reject) => {
      this.waiters.set(id, { resolve, reject });
      this.conn.send(msg, msg.length);
    });
  }

  async call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const { result, fds } = await this.callWithFds(op, args);
    for (const f of fds) native.close(f);
    return result as T;
  }

  onEvent(listener: (e: unknown) => void): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  close(): void {
    this.conn.close(null);
  }
}
