// Promise forms of net.Server#listen, including "the first free port of these".
import type { Server } from 'node:net';

/** Listens on a TCP port (with host) or a UNIX socket path; rejects with the listen error. */
export function listenOn(server: Server, port: number | string, host?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      server.off('error', reject);
      resolve();
    };
    if (typeof port === 'string') server.listen(port, done);
    else server.listen(port, host, done);
  });
}

/**
 * Listens on the first of `ports` that is free (0 = any) and returns the port bound. A port in use
 * moves on to the next; any other error, or the last port in use, rejects (with `exhausted` as the
 * message for the latter when given).
 */
export async function listenFirstFree(server: Server, host: string, ports: readonly number[], exhausted?: string): Promise<number> {
  for (const [i, port] of ports.entries()) {
    try {
      await listenOn(server, port, host);
      const a = server.address();
      return typeof a === 'object' && a ? a.port : port;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw e;
      if (i === ports.length - 1) throw exhausted ? new Error(exhausted) : e;
    }
  }
  throw new Error('no port to listen on');
}
