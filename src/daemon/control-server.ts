// The daemon's management socket. Only the daemon's user (and root) can
// connect: the socket is created mode 0600 inside a 0700 run directory.
import { chmodSync } from 'node:fs';
import { MdevError } from '../mdev/errors.js';
import * as native from '../native/index.js';
import type { Header } from '../vfio-user/codec.js';
import { Connection } from '../vfio-user/connection.js';
import {
  CONTROL_CMD,
  type ControlRequest,
  decodeControl,
  encodeControl,
  KIND_ERROR,
  KIND_EVENT,
  KIND_REPLY,
  KIND_REQUEST,
  MAX_CONTROL_MESSAGE,
} from './control-protocol.js';

/** A handler's result: JSON, optionally with fds to pass (the daemon keeps its own copies). */
export interface HandlerResult {
  result: unknown;
  fds?: number[];
}

export class ControlClientLink {
  // Keyed, so a handler called a million times on one connection registers its cleanup once.
  private readonly cleanups = new Map<unknown, () => void>();
  constructor(readonly conn: Connection) {}
  /** Sends an event (subscriptions). */
  event(body: unknown): void {
    const m = encodeControl(0, KIND_EVENT, body);
    this.conn.send(m, m.length);
  }
  /** Runs `fn` when the connection closes; a second registration under the same key replaces it. */
  onClose(fn: () => void, key: unknown = fn): void {
    this.cleanups.set(key, fn);
  }
  /** Drops a cleanup that is no longer needed (e.g. an ended subscription). */
  offClose(key: unknown): void {
    this.cleanups.delete(key);
  }
  closed(): void {
    for (const f of this.cleanups.values()) f();
    this.cleanups.clear();
  }
}

export type Handler = (args: Record<string, unknown>, link: ControlClientLink) => Promise<HandlerResult | unknown> | HandlerResult | unknown;

export class ControlServer {
  private fd = -1;
  private poll: native.PollHandle | null = null;
  private readonly links = new Set<ControlClientLink>();

  constructor(
    readonly path: string,
    private readonly handlers: Map<string, Handler>,
    private readonly log: (m: string) => void,
  ) {}

  listen(): void {
    this.fd = native.listen(this.path, 16);
    chmodSync(this.path, 0o600);
    this.poll = native.poll(this.fd, native.READABLE, () => {
      for (;;) {
        const c = native.accept(this.fd);
        if (c < 0) return;
        this.serve(c);
      }
    });
  }

  private serve(fd: number): void {
    let link: ControlClientLink;
    // Requests of one client are answered in order even when handlers are async.
    let chain: Promise<void> = Promise.resolve();
    const conn = new Connection(
      fd,
      {
        onMessage: (h: Header, p: Uint8Array, fds: number[]) => {
          for (const f of fds) native.close(f); // clients never send fds
          if (h.cmd !== CONTROL_CMD || (h.flags & 0xff) !== KIND_REQUEST) {
            conn.close('not a control request');
            return;
          }
          let req: ControlRequest;
          try {
            req = decodeControl(p) as ControlRequest;
          } catch {
            this.reply(conn, h.id, null, new MdevError('EINVAL', 'request is not valid JSON'));
            return;
          }
          const id = h.id;
          chain = chain.then(() => this.dispatch(conn, link, id, req));
        },
        onOversized: () => conn.close('control message too large'),
        onClose: () => {
          this.links.delete(link);
          link.closed();
        },
      },
      { maxMessageSize: MAX_CONTROL_MESSAGE },
    );
    link = new ControlClientLink(conn);
    this.links.add(link);
  }

  private async dispatch(conn: Connection, link: ControlClientLink, id: number, req: ControlRequest): Promise<void> {
    const h = typeof req?.op === 'string' ? this.handlers.get(req.op) : undefined;
    if (!h) {
      this.reply(conn, id, null, new MdevError('EINVAL', `unknown operation ${JSON.stringify(req?.op)}`));
      return;
    }
    try {
      const args = req.args && typeof req.args === 'object' ? req.args : {};
      const out = await h(args, link);
      if (out && typeof out === 'object' && 'result' in out) {
        const r = out as HandlerResult;
        this.reply(conn, id, r.result, null, r.fds);
      } else this.reply(conn, id, out, null);
    } catch (e) {
      if (!(e instanceof MdevError)) this.log(`control ${req.op} failed: ${(e as Error).stack ?? e}`);
      this.reply(conn, id, null, e as Error);
    }
  }

  private reply(conn: Connection, id: number, result: unknown, error: Error | null, fds?: number[]): void {
    if (conn.isClosed) return;
    const msg = error
      ? encodeControl(id, KIND_ERROR, {
          code: error instanceof MdevError ? error.code : 'EIO',
          errno: error instanceof MdevError ? error.errno : 5,
          message: error.message,
        })
      : encodeControl(id, KIND_REPLY, { result: result ?? null });
    conn.send(msg, msg.length, fds ?? null);
  }

  close(): void {
    if (this.poll) native.pollClose(this.poll);
    this.poll = null;
    if (this.fd >= 0) native.close(this.fd);
    this.fd = -1;
    for (const l of this.links) l.conn.close('daemon shutting down');
  }
}
