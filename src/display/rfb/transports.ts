// Adapters that let one RFB session run over a TCP socket or a WebSocket.
import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { RfbTransport } from './session.js';

export function tcpTransport(sock: Socket): RfbTransport {
  sock.setNoDelay(true);
  return {
    write: (d) => {
      sock.write(d);
    },
    get buffered() {
      return sock.writableLength;
    },
    close: () => sock.destroy(),
    onData: (cb) => sock.on('data', cb),
    onClose: (cb) => {
      sock.on('close', cb);
      sock.on('error', () => {});
    },
    onDrain: (cb) => sock.on('drain', cb),
    remote: `${sock.remoteAddress ?? 'local'}:${sock.remotePort ?? 0}`,
  };
}

export function wsTransport(ws: WebSocket, remote: string): RfbTransport {
  const drainListeners: (() => void)[] = [];
  let drainTimer: NodeJS.Timeout | null = null;
  // ws has no 'drain' event: watch bufferedAmount while something is queued.
  const watchDrain = () => {
    if (drainTimer || ws.bufferedAmount === 0) return;
    drainTimer = setInterval(() => {
      if (ws.bufferedAmount > 0 && ws.readyState === ws.OPEN) return;
      if (drainTimer) clearInterval(drainTimer);
      drainTimer = null;
      for (const l of drainListeners) l();
    }, 5);
  };
  return {
    write: (d) => {
      if (ws.readyState !== ws.OPEN) return;
      ws.send(d, { binary: true });
      watchDrain();
    },
    get buffered() {
      return ws.bufferedAmount;
    },
    close: () => ws.terminate(),
    onData: (cb) =>
      ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) => {
        cb(Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data));
      }),
    onClose: (cb) => {
      ws.on('close', () => {
        if (drainTimer) clearInterval(drainTimer);
        cb();
      });
      ws.on('error', () => {});
    },
    onDrain: (cb) => drainListeners.push(cb),
    remote,
  };
}
