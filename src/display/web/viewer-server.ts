// The daemon's web front: static noVNC, the list page, a viewer page per
// instance, PNG thumbnails and the WebSocket endpoint that carries RFB to the
// browser (no websockify). Every instance URL carries that instance's token;
// the list page needs the daemon's admin token.
import { timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import { dirname, extname, join, normalize } from 'node:path';
import { WebSocketServer } from 'ws';
import { listenFirstFree } from '../../util/listen.js';
import { encodePngRgb } from '../png.js';
import type { ShadowFramebuffer } from '../rfb/framebuffer.js';
import type { VncServer } from '../rfb/server.js';
import { type ListedDisplay, listPage, viewerPage } from './pages.js';

export interface ViewerTarget {
  uuid: string;
  type: string;
  token: string;
  vnc: VncServer;
}

export interface ViewerServerOptions {
  host: string;
  port: number;
  adminToken: string;
  targets: () => ViewerTarget[];
  log?: (m: string) => void;
}

const MIME: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.css': 'text/css',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
};

function tokenOk(given: string | null, want: string): boolean {
  if (!given) return false;
  const a = Buffer.from(given);
  const b = Buffer.from(want);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Nearest-neighbour downscale of the shadow frame to at most `maxW` wide, as RGB. */
export function thumbnail(fb: ShadowFramebuffer, maxW = 320): { w: number; h: number; rgb: Uint8Array } {
  const { width, height, pixels } = fb.frame;
  const scale = Math.max(1, width / maxW);
  const w = Math.max(1, Math.floor(width / scale));
  const h = Math.max(1, Math.floor(height / scale));
  const rgb = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const sy = Math.min(height - 1, Math.floor(y * scale));
    for (let x = 0; x < w; x++) {
      const p = pixels[sy * width + Math.min(width - 1, Math.floor(x * scale))] as number;
      const o = (y * w + x) * 3;
      rgb[o] = (p >> 16) & 0xff;
      rgb[o + 1] = (p >> 8) & 0xff;
      rgb[o + 2] = p & 0xff;
    }
  }
  return { w, h, rgb };
}

export class ViewerServer {
  private server: Server | null = null;
  private wss: WebSocketServer | null = null;
  private readonly novncRoot: string;
  address: { host: string; port: number } | null = null;

  constructor(private readonly options: ViewerServerOptions) {
    const require = createRequire(import.meta.url);
    // The package exports only core/rfb.js; its root is two levels up.
    this.novncRoot = dirname(dirname(require.resolve('@novnc/novnc')));
  }

  private target(uuid: string): ViewerTarget | undefined {
    return this.options.targets().find((t) => t.uuid === uuid);
  }

  async listen(): Promise<{ host: string; port: number }> {
    const server = createServer((req, res) => {
      this.route(req, res).catch((e) => {
        this.options.log?.(`http: ${(e as Error).message}`);
        if (!res.headersSent) res.writeHead(500).end('internal error');
      });
    });
    // perMessageDeflate off: RFB payloads are already compressed.
    const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 4 << 20 });
    server.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const m = /^\/vm\/([0-9a-f-]{36})\/ws$/.exec(url.pathname);
      const t = m ? this.target(m[1] as string) : undefined;
      if (!t || !tokenOk(url.searchParams.get('token'), t.token)) {
        socket.end('HTTP/1.1 403 Forbidden\r\n\r\n');
        return;
      }
      // Accept noVNC's default (no subprotocol) as well as older clients asking for "binary".
      wss.handleUpgrade(req, socket, head, (ws) => {
        t.vnc.addWebSocket(ws, `ws:${req.socket.remoteAddress}:${req.socket.remotePort}`, url.searchParams.get('view_only') === '1');
      });
    });
    wss.options.handleProtocols = (set: Set<string>) => (set.has('binary') ? 'binary' : false);
    const { host } = this.options;
    // The configured port, the next few, and finally any free one: a busy port must not stop the daemon.
    const ports = this.options.port ? [this.options.port, ...Array.from({ length: 20 }, (_, i) => this.options.port + 1 + i), 0] : [0];
    const port = await listenFirstFree(server, host, ports);
    this.server = server;
    this.wss = wss;
    this.address = { host, port };
    return this.address;
  }

  url(path = '/', token = this.options.adminToken): string {
    const a = this.address ?? { host: this.options.host, port: this.options.port };
    const host = a.host.includes(':') ? `[${a.host}]` : a.host;
    return `http://${host}:${a.port}${path}?token=${token}`;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const token = url.searchParams.get('token');
    const path = url.pathname;
    res.setHeader('Cache-Control', 'no-store');
    res.setHeader('X-Content-Type-Options', 'nosniff');
    if (path === '/') {
      if (!tokenOk(token, this.options.adminToken)) return void res.writeHead(403).end('a valid token is required');
      const list: ListedDisplay[] = this.options.targets().map((t) => ({
        uuid: t.uuid,
        type: t.type,
        token: t.token,
        width: t.vnc.display.width,
        height: t.vnc.display.height,
        vnc: t.vnc.address ? `${t.vnc.address.host}:${t.vnc.address.port}` : null,
        viewers: t.vnc.display.sessions.size,
      }));
      res.writeHead(200, { 'Content-Type': MIME['.html'] }).end(listPage(list, this.options.adminToken));
      return;
    }
    if (path.startsWith('/novnc/')) {
      const rel = normalize(path.slice('/novnc/'.length)).replace(/^(\.\.(\/|$))+/, '');
      if (!/^(core|vendor)\//.test(rel)) return void res.writeHead(404).end();
      try {
        const body = await readFile(join(this.novncRoot, rel));
        res.writeHead(200, { 'Content-Type': MIME[extname(rel)] ?? 'application/octet-stream', 'Cache-Control': 'max-age=3600' }).end(body);
      } catch {
        res.writeHead(404).end();
      }
      return;
    }
    const m = /^\/vm\/([0-9a-f-]{36})(\/thumb\.png)?$/.exec(path);
    if (m) {
      const t = this.target(m[1] as string);
      if (!t || !tokenOk(token, t.token)) return void res.writeHead(403).end('a valid token is required');
      if (m[2]) {
        const fb = t.vnc.display.fb;
        // With nobody watching, the shadow is refreshed just for this thumbnail.
        if (t.vnc.display.sessions.size === 0) fb.refresh();
        const th = thumbnail(fb);
        res.writeHead(200, { 'Content-Type': 'image/png' }).end(encodePngRgb(th.w, th.h, th.rgb, 1));
        return;
      }
      res.writeHead(200, { 'Content-Type': MIME['.html'] }).end(viewerPage(t.uuid, t.token, url.searchParams.get('view_only') === '1'));
      return;
    }
    res.writeHead(404).end('not found');
  }

  async close(): Promise<void> {
    for (const c of this.wss?.clients ?? []) c.terminate();
    this.wss?.close();
    const s = this.server;
    this.server = null;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
  }
}
