// Real VNC clients as test oracles (installed by scripts/test-clients.sh), plus QEMU's own VNC server as
// the reference server the harnesses are validated against (vnc-clients.test.ts).
//
//  * gvncCapture     — gtk-vnc's `gvnccapture`: one PNG of the server-native framebuffer (pixel-exact oracle).
//  * tigerCapture /
//    startTigerViewer — TigerVNC's `xtigervncviewer` on a private Xvfb; the X screen is read straight from
//                       Xvfb's `-fbdir` memory-mapped XWD file (no xwd/ImageMagick), the viewer window is
//                       located with `xwininfo` (x11-utils).
//  * waitForPixels   — polls any capture function until it shows the expected picture.
//  * startQemuVnc    — QEMU (qtest accelerator, no guest) with std VGA whose mode and VRAM the test writes
//                      directly: any test picture, resizes, password auth, WebSocket.
//
// Pitfalls (verified against QEMU 11.1 and Debian's 7.2):
//  * gvnccapture and TigerVNC (without -Shared) connect EXCLUSIVE (ClientInit shared=0): under QEMU's default
//    `share=allow-exclusive` they disconnect every other client. noVNC connects shared.
//  * gvnccapture saves the PNG as soon as ONE rectangle touching the bottom-right corner arrives, so a server
//    must send that rect last. It has no password option: it prompts "Password: " and reads the answer from
//    stdin only if stdin is a terminal (tcgetattr/TCSAFLUSH), so we run it under util-linux `script` (pty) and
//    type the password after the prompt. It takes HOST:DISPLAY only (port = 5900 + atoi(DISPLAY)); a negative
//    display reaches ports below 5900. No IPv6 literal (the first ':' splits).
//  * xtigervncviewer exits 0 on every error (refused, auth failure): failures are recognised from its log.
//    Without a password for a VncAuth server it opens a "VNC authentication" dialog and waits; with
//    -Log level >= 100 for DesktopWindow it paints a throughput graph over the desktop, and it shows a
//    "Press F8 …" overlay unless -MenuKey is empty. It writes ~/.vnc/default.tigervnc: HOME is a temp dir.
//  * Without a window manager FLTK maps the viewer at +1+20 even with -geometry +0+0: read the position.
//  * Debian bookworm's QEMU 7.2 has no qtest accelerator: startQemuVnc needs scripts/test-env.sh's QEMU.

import { type ChildProcess, type SpawnOptions, spawn, spawnSync } from 'node:child_process';
import { accessSync, closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, readSync, rmSync, statfsSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import { type Pattern, xrgbPattern } from './patterns.js';
import { decodePng } from './png-decode.js';
import { loadTestEnv } from './qemu.js';

/** A captured picture as packed RGB (3 bytes per pixel, rows top to bottom). */
export interface Capture {
  width: number;
  height: number;
  rgb: Uint8Array;
}

// ---------------------------------------------------------------------------------------------------------
// process bookkeeping

const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
let exitHook = false;
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  // last resort when a test forgets close(): nothing we started may outlive the test process
  process.on('exit', () => {
    for (const p of live) killTree(p, 'SIGKILL');
    for (const d of liveDirs) rmSync(d, { recursive: true, force: true });
  });
}
/**
 * Registers a child for the exit hook. `unref`: the child and its pipes do not keep the event loop alive, so a
 * test that forgets close() still ends (and the exit hook kills the child) instead of hanging the run.
 */
function track(c: ChildProcess, unref = false): ChildProcess {
  installExitHook();
  live.add(c);
  c.once('exit', () => live.delete(c));
  if (unref) {
    c.unref();
    for (const s of c.stdio) (s as { unref?: () => void } | null)?.unref?.();
  }
  return c;
}

/** Kills a child spawned with `detached: true` together with its process group. */
function killTree(c: ChildProcess, sig: NodeJS.Signals): void {
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return;
  try {
    process.kill(-c.pid, sig);
  } catch {
    try {
      c.kill(sig);
    } catch {}
  }
}

const SETPRIV = existsSync('/usr/bin/setpriv') ? '/usr/bin/setpriv' : undefined;
/**
 * spawn() that also ties the child to this process' life: through util-linux `setpriv --pdeathsig KILL` the
 * kernel SIGKILLs it when the test process dies (even by SIGKILL, when no exit hook runs). Always detached
 * (own process group, so killTree reaches its children too).
 */
function spawnTied(cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  const o = { ...options, detached: true };
  return SETPRIV ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', cmd, ...args], o) : spawn(cmd, args, o);
}

function exitOf(c: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (c.exitCode !== null || c.signalCode !== null) return Promise.resolve({ code: c.exitCode, signal: c.signalCode });
  return new Promise((res) => c.once('exit', (code, signal) => res({ code, signal })));
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves when the process has exited. */
async function stop(c: ChildProcess, graceMs = 2000): Promise<void> {
  const done = exitOf(c);
  killTree(c, 'SIGTERM');
  const t = setTimeout(() => killTree(c, 'SIGKILL'), graceMs);
  await done;
  clearTimeout(t);
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function tail(s: string, n = 3000): string {
  return s.length > n ? `…${s.slice(-n)}` : s;
}

/** Absolute path of `cmd` on PATH (or the path itself if it is executable), else undefined. */
export function which(cmd: string): string | undefined {
  const dirs = cmd.includes('/') ? [''] : (process.env.PATH ?? '/usr/bin:/bin').split(delimiter);
  for (const d of dirs) {
    const p = d ? join(d, cmd) : cmd;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

/** Programs each harness needs. */
export const CLIENT_PROGRAMS = {
  gvnccapture: ['gvnccapture', 'script'],
  tigervnc: ['xtigervncviewer', 'Xvfb', 'xwininfo'],
  chromium: ['chromium'],
} as const;

/** Which of the programs `kinds` need are missing (names); empty when all are installed. */
export function missingPrograms(...kinds: (keyof typeof CLIENT_PROGRAMS)[]): string[] {
  const ks = kinds.length ? kinds : (Object.keys(CLIENT_PROGRAMS) as (keyof typeof CLIENT_PROGRAMS)[]);
  return [...new Set(ks.flatMap((k) => CLIENT_PROGRAMS[k]))].filter((p) => !which(p));
}

/** A free TCP port on 127.0.0.1 (closed again; small race window). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => (a && typeof a === 'object' ? res(a.port) : rej(new Error('no port'))));
    });
  });
}

// ---------------------------------------------------------------------------------------------------------
// gvnccapture

export interface GvncCaptureOptions {
  /** VNC password, typed at gvnccapture's prompt through a pty */
  password?: string;
  /** default 15000 */
  timeoutMs?: number;
}

/** Error of a client that ran but did not capture; `output` is its console text. */
export class VncClientError extends Error {
  constructor(
    message: string,
    readonly output: string,
    readonly code: number | null = null,
  ) {
    super(message);
    this.name = 'VncClientError';
  }
}

const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Captures one frame with `gvnccapture` into `outPng` (must end in .png) and decodes it. gvnccapture keeps
 * the server's pixel format, asks for ZRLE/Hextile/RRE/CopyRect/Raw + DesktopSize, connects exclusive and
 * saves on the first rect that touches the bottom-right corner. Rejects with VncClientError when it exits
 * non-zero (refused, wrong password, …) or times out.
 */
export async function gvncCapture(host: string, port: number, outPng: string, opts: GvncCaptureOptions = {}): Promise<Capture> {
  if (!outPng.endsWith('.png')) throw new Error(`gvncCapture: ${outPng} must end in .png (gvnccapture picks the format by extension)`);
  if (host.includes(':')) throw new Error(`gvncCapture: host ${host} — gvnccapture cannot parse IPv6 literals`);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  rmSync(outPng, { force: true });
  // HOST:DISPLAY with port = 5900 + atoi(DISPLAY); a negative display reaches ports below 5900
  const target = `${host}:${port - 5900}`;
  const argv = ['gvnccapture', target, outPng];
  const usePty = opts.password !== undefined;
  const child = track(
    usePty
      ? spawnTied('script', ['-q', '-e', '-c', argv.map(shq).join(' '), '/dev/null'], {
          stdio: ['pipe', 'pipe', 'pipe'],
          env: { ...process.env, SHELL: '/bin/sh', LC_ALL: 'C' },
        })
      : spawnTied(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } }),
  );
  let out = '';
  let typed = false;
  const typing: NodeJS.Timeout[] = [];
  const onData = (d: Buffer) => {
    out += d.toString('utf8');
    if (usePty && !typed && out.includes('Password:')) {
      typed = true;
      // gvnccapture prints the prompt, THEN turns echo off with TCSAFLUSH, which discards input already
      // queued: type a little later, and again in case a loaded machine still lost the race (surplus lines
      // are never read)
      for (const ms of [50, 1000, 3000]) typing.push(setTimeout(() => child.stdin?.writable && child.stdin.write(`${opts.password}\n`), ms));
    }
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  child.stdin?.on('error', () => {});
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killTree(child, 'SIGKILL');
  }, timeoutMs);
  const spawnErr = new Promise<never>((_, rej) => child.once('error', (e) => rej(new Error(`cannot run gvnccapture: ${e.message}`))));
  const { code, signal } = await Promise.race([exitOf(child), spawnErr]).finally(() => {
    clearTimeout(timer);
    for (const t of typing) clearTimeout(t);
  });
  let clean = out.replace(/\r/g, '');
  if (opts.password) clean = clean.split(opts.password).join('***');
  if (timedOut) throw new VncClientError(`gvnccapture ${target} timed out after ${timeoutMs} ms: ${tail(clean)}`, clean, code);
  if (code !== 0 || !existsSync(outPng))
    throw new VncClientError(`gvnccapture ${target} failed (exit ${code ?? signal}): ${tail(clean.trim()) || '(no output)'}`, clean, code);
  return decodePng(readFileSync(outPng));
}

// ---------------------------------------------------------------------------------------------------------
// TigerVNC on Xvfb

export interface TigerOptions {
  /** VNC password (passed as VNC_PASSWORD; never on the command line) */
  password?: string;
  /** -Shared: ClientInit shared=1 (default false = exclusive, TigerVNC's default) */
  shared?: boolean;
  /** start timeout: until the viewer's desktop window exists; default 15000 */
  timeoutMs?: number;
  /** tigerCapture: the window must be unchanged this long before it is grabbed; default 400 */
  settleMs?: number;
  /** Xvfb screen; default 4096x2400 (the viewer window is the server's size and must fit) */
  screen?: { width: number; height: number };
  /**
   * -NoJPEG: no JPEG quality level is sent, so Tight stays lossless (default false = TigerVNC's own default,
   * AutoSelect with quality 8: a server doing Tight+JPEG then needs a tolerance in comparisons)
   */
  noJpeg?: boolean;
  /** -ViewOnly (default true: the harness never wants the X pointer to reach the server) */
  viewOnly?: boolean;
  /** more viewer parameters, e.g. ['-PreferredEncoding', 'ZRLE', '-AutoSelect=0', '-NoJPEG'] */
  extraArgs?: string[];
}

export interface TigerViewer {
  /** X display number of the private Xvfb */
  readonly display: number;
  /** the viewer's temp HOME; removed by close() */
  readonly dir: string;
  readonly viewerPid: number;
  readonly xvfbPid: number;
  /** where the remote desktop is on the X screen (the viewer's window), read with xwininfo */
  geometry(): Promise<{ x: number; y: number; width: number; height: number }>;
  /** the remote desktop as the viewer shows it right now */
  grab(): Promise<Capture>;
  /** the viewer's log (stderr, -Log *:stderr:30) */
  log(): string;
  /** true while xtigervncviewer runs */
  running(): boolean;
  /** resolves when the viewer exits (it exits 0 on errors and on being disconnected) */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** stops viewer and Xvfb, removes the temp directories; idempotent */
  close(): Promise<void>;
}

interface XwdLayout {
  width: number;
  height: number;
  bytesPerLine: number;
  pixelOffset: number;
}

function readXwdLayout(fd: number): XwdLayout {
  const h = Buffer.alloc(100);
  readSync(fd, h, 0, 100, 0);
  const u = (i: number) => h.readUInt32BE(i * 4);
  const [headerSize, version, format, depth, width, height, , byteOrder, , , , bpp, bytesPerLine, visual, rmask, gmask, bmask, , , ncolors] = Array.from(
    { length: 20 },
    (_, i) => u(i),
  );
  if (version !== 7 || format !== 2 || depth !== 24 || bpp !== 32 || byteOrder !== 0 || visual !== 4)
    throw new Error(`unexpected Xvfb XWD layout: version ${version} format ${format} depth ${depth} bpp ${bpp} byte order ${byteOrder}`);
  if (rmask !== 0xff0000 || gmask !== 0xff00 || bmask !== 0xff) throw new Error('unexpected Xvfb channel masks');
  return {
    width: width as number,
    height: height as number,
    bytesPerLine: bytesPerLine as number,
    pixelOffset: (headerSize as number) + (ncolors as number) * 12,
  };
}

function runCapture(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 5000): Promise<{ code: number | null; out: string }> {
  return new Promise((res, rej) => {
    const c = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (out += d));
    const t = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    c.once('error', (e) => {
      clearTimeout(t);
      rej(e);
    });
    c.once('close', (code) => {
      clearTimeout(t);
      res({ code, out });
    });
  });
}

interface XWindow {
  id: string;
  name: string;
  width: number;
  height: number;
  x: number;
  y: number;
}

async function listTopWindows(env: NodeJS.ProcessEnv): Promise<XWindow[]> {
  const { out } = await runCapture('xwininfo', ['-root', '-children'], env);
  const wins: XWindow[] = [];
  //      0x200005 "QEMU - TigerVNC": ("TigerVNC Viewer" "TigerVNC Viewer")  640x480+1+20  +1+20
  const re = /^\s*(0x[0-9a-f]+) "(.*)": \(.*\)\s+(\d+)x(\d+)[+-]-?\d+[+-]-?\d+\s+([+-]-?\d+)([+-]-?\d+)\s*$/;
  for (const line of out.split('\n')) {
    const m = re.exec(line);
    if (m)
      wins.push({ id: m[1] as string, name: m[2] as string, width: +(m[3] as string), height: +(m[4] as string), x: +(m[5] as string), y: +(m[6] as string) });
  }
  return wins;
}

/**
 * Starts a private Xvfb (free display chosen by Xvfb itself, `-displayfd`) and `xtigervncviewer` on it, and
 * resolves once the viewer's desktop window exists (not necessarily painted: poll `grab()` with
 * waitForPixels). The window has the server's size and follows DesktopSize changes (-RemoteResize=0: the
 * viewer never asks the server to resize). Rejects with the viewer log if it exits first (refused, auth
 * failure) or asks for a password interactively.
 */
export async function startTigerViewer(host: string, port: number, opts: TigerOptions = {}): Promise<TigerViewer> {
  const missing = missingPrograms('tigervnc');
  if (missing.length) throw new Error(`TigerVNC harness: missing ${missing.join(', ')} (run scripts/test-clients.sh)`);
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const screen = opts.screen ?? { width: 4096, height: 2400 };
  // Xvfb's screen is a MAP_SHARED file: RAM-backed /dev/shm if it has room (docker gives it 64 MB), else TMPDIR.
  // Once Xvfb has mapped it and we hold it open, file and directory are removed: nothing is left even if the
  // test process is killed. The viewer's HOME is a separate small temp directory.
  const fbBytes = screen.width * screen.height * 4 + 8192;
  let fbBase = tmpdir();
  try {
    const st = statfsSync('/dev/shm');
    if (st.bavail * st.bsize > 2 * fbBytes) fbBase = '/dev/shm';
  } catch {}
  const dir = mkdtempSync(join(tmpdir(), 'mediated-tiger-'));
  const fbDir = mkdtempSync(join(fbBase, 'mediated-xvfb-'));
  for (const d of [dir, fbDir]) liveDirs.add(d);
  const cleanups: (() => Promise<void> | void)[] = [
    () => {
      for (const d of [dir, fbDir]) {
        rmSync(d, { recursive: true, force: true });
        liveDirs.delete(d);
      }
    },
  ];
  const cleanup = async () => {
    for (const f of cleanups.splice(0).reverse()) await f();
  };

  try {
    // --- Xvfb ---
    const xvfb = track(
      spawnTied(
        'Xvfb',
        // biome-ignore format: option/value pairs
        ['-displayfd', '3', '-screen', '0', `${screen.width}x${screen.height}x24`, '-fbdir', fbDir, '-nolisten', 'tcp', '-noreset'],
        { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] },
      ),
      true,
    );
    cleanups.push(() => stop(xvfb));
    let xlog = '';
    xvfb.stderr?.on('data', (d) => (xlog += d));
    const display = await new Promise<number>((res, rej) => {
      let s = '';
      const fd3 = xvfb.stdio[3] as NodeJS.ReadableStream;
      const t = setTimeout(() => rej(new Error(`Xvfb did not report a display within ${timeoutMs} ms: ${tail(xlog)}`)), timeoutMs);
      fd3.on('data', (d: Buffer) => {
        s += d.toString();
        if (s.includes('\n')) {
          clearTimeout(t);
          res(Number.parseInt(s, 10));
        }
      });
      xvfb.once('exit', (c) => {
        clearTimeout(t);
        rej(new Error(`Xvfb exited (${c}) before reporting a display: ${tail(xlog)}`));
      });
      xvfb.once('error', (e) => {
        clearTimeout(t);
        rej(new Error(`cannot run Xvfb: ${e.message}`));
      });
    });
    const fbPath = join(fbDir, 'Xvfb_screen0');
    const fbFd = openSync(fbPath, 'r');
    cleanups.push(() => closeSync(fbFd));
    const layout = readXwdLayout(fbFd);
    rmSync(fbDir, { recursive: true, force: true }); // Xvfb keeps its mapping, we keep fbFd
    liveDirs.delete(fbDir);

    // --- viewer ---
    const home = join(dir, 'home');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      DISPLAY: `:${display}`,
      HOME: home,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_DATA_HOME: join(home, '.local/share'),
      XDG_STATE_HOME: join(home, '.local/state'),
      XAUTHORITY: join(home, '.Xauthority'),
      LC_ALL: 'C',
    };
    delete env.VNC_PASSWORD;
    delete env.VNC_USERNAME;
    if (opts.password !== undefined) env.VNC_PASSWORD = opts.password;
    const args = [
      '-Log',
      '*:stderr:30',
      '-MenuKey=',
      '-RemoteResize=0',
      '-ReconnectOnError=0',
      '-AlertOnFatalError=0',
      `-Shared=${opts.shared ? 1 : 0}`,
      `-ViewOnly=${opts.viewOnly === false ? 0 : 1}`,
      ...(opts.noJpeg ? ['-NoJPEG'] : []),
      '-geometry',
      '+0+0',
      ...(opts.extraArgs ?? []),
      `${host}::${port}`,
    ];
    const viewer = track(spawnTied('xtigervncviewer', args, { env, stdio: ['ignore', 'pipe', 'pipe'] }), true);
    cleanups.push(() => stop(viewer));
    let vlog = '';
    viewer.stdout?.on('data', (d) => (vlog += d));
    viewer.stderr?.on('data', (d) => (vlog += d));
    viewer.once('error', (e) => (vlog += `\n[harness] cannot run xtigervncviewer: ${e.message}\n`));
    const exited = exitOf(viewer);
    const cleanLog = () => vlog.replace(/^.*No key mapping for key.*\n/gm, '');

    const findDesktop = async () => (await listTopWindows(env)).find((w) => w.name.endsWith(' - TigerVNC'));
    const t0 = Date.now();
    for (;;) {
      if (viewer.exitCode !== null || viewer.signalCode !== null)
        throw new VncClientError(
          `xtigervncviewer exited (${viewer.exitCode ?? viewer.signalCode}) before its window appeared: ${tail(cleanLog().trim())}`,
          cleanLog(),
        );
      const wins = await listTopWindows(env);
      if (wins.some((w) => w.name.endsWith(' - TigerVNC'))) break;
      const dialog = wins.find((w) => w.name === 'VNC authentication');
      if (dialog) throw new VncClientError(`xtigervncviewer asks for a password (server wants VNC auth, none given): ${tail(cleanLog().trim())}`, cleanLog());
      if (Date.now() - t0 > timeoutMs)
        throw new VncClientError(`xtigervncviewer: no desktop window after ${timeoutMs} ms: ${tail(cleanLog().trim())}`, cleanLog());
      await sleep(50);
    }

    const geometry = async () => {
      const w = await findDesktop();
      if (!w) throw new VncClientError(`xtigervncviewer has no desktop window (exited: ${!viewerRunning()}): ${tail(cleanLog().trim())}`, cleanLog());
      return { x: w.x, y: w.y, width: w.width, height: w.height };
    };
    const viewerRunning = () => viewer.exitCode === null && viewer.signalCode === null;
    const grab = async (): Promise<Capture> => {
      const g = await geometry();
      const x0 = Math.max(0, g.x);
      const y0 = Math.max(0, g.y);
      const w = Math.max(0, Math.min(g.width, layout.width - x0));
      const h = Math.max(0, Math.min(g.height, layout.height - y0));
      const rows = Buffer.alloc(h * layout.bytesPerLine);
      if (h) readSync(fbFd, rows, 0, rows.length, layout.pixelOffset + y0 * layout.bytesPerLine);
      const rgb = new Uint8Array(w * h * 3);
      for (let y = 0; y < h; y++) {
        let s = y * layout.bytesPerLine + x0 * 4;
        let d = y * w * 3;
        for (let x = 0; x < w; x++, s += 4, d += 3) {
          // LSBFirst 32 bpp, masks ff0000/ff00/ff: bytes B, G, R, pad
          rgb[d] = rows[s + 2] as number;
          rgb[d + 1] = rows[s + 1] as number;
          rgb[d + 2] = rows[s] as number;
        }
      }
      return { width: w, height: h, rgb };
    };
    let closing: Promise<void> | undefined;
    return {
      display,
      dir,
      viewerPid: viewer.pid as number,
      xvfbPid: xvfb.pid as number,
      geometry,
      grab,
      log: cleanLog,
      running: viewerRunning,
      exited,
      close: () => (closing ??= cleanup()),
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

function sameCapture(a: Capture, b: Capture): boolean {
  return a.width === b.width && a.height === b.height && Buffer.from(a.rgb.buffer, a.rgb.byteOffset, a.rgb.byteLength).equals(b.rgb);
}

/**
 * One TigerVNC capture: starts Xvfb + viewer, waits until the window has been unchanged for `settleMs`
 * (QEMU and our server paint within a few ms; a picture that is still black after settleMs is returned as
 * black — use startTigerViewer + waitForPixels when the expected picture is known), grabs it, and stops
 * everything.
 */
export async function tigerCapture(host: string, port: number, opts: TigerOptions = {}): Promise<Capture> {
  const settleMs = opts.settleMs ?? 400;
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const v = await startTigerViewer(host, port, opts);
  try {
    const t0 = Date.now();
    let prev = await v.grab();
    let since = Date.now();
    for (;;) {
      await sleep(50);
      if (!v.running()) throw new VncClientError(`xtigervncviewer exited while settling: ${tail(v.log().trim())}`, v.log());
      const cur = await v.grab();
      if (!sameCapture(prev, cur)) {
        prev = cur;
        since = Date.now();
      } else if (Date.now() - since >= settleMs) return cur;
      if (Date.now() - t0 > timeoutMs) throw new Error(`TigerVNC picture did not settle within ${timeoutMs} ms`);
    }
  } finally {
    await v.close();
  }
}

// ---------------------------------------------------------------------------------------------------------
// waiting for a picture

export interface PixelDiff {
  /** differing pixels (all pixels if the sizes differ) */
  differing: number;
  /** largest per-channel difference */
  maxDelta: number;
  /** first differing pixel */
  first?: { x: number; y: number; got: [number, number, number]; want: [number, number, number] };
}

/** Compares two pictures; `tolerance` is the per-channel difference still counted as equal. */
export function comparePixels(got: Capture, want: Capture, tolerance = 0): PixelDiff {
  if (got.width !== want.width || got.height !== want.height) return { differing: want.width * want.height, maxDelta: 255 };
  let differing = 0;
  let maxDelta = 0;
  let first: PixelDiff['first'];
  const a = got.rgb;
  const b = want.rgb;
  for (let i = 0; i < b.length; i += 3) {
    const d = Math.max(
      Math.abs((a[i] as number) - (b[i] as number)),
      Math.abs((a[i + 1] as number) - (b[i + 1] as number)),
      Math.abs((a[i + 2] as number) - (b[i + 2] as number)),
    );
    if (d > maxDelta) maxDelta = d;
    if (d > tolerance) {
      differing++;
      if (!first) {
        const p = i / 3;
        first = {
          x: p % want.width,
          y: Math.floor(p / want.width),
          got: [a[i] as number, a[i + 1] as number, a[i + 2] as number],
          want: [b[i] as number, b[i + 1] as number, b[i + 2] as number],
        };
      }
    }
  }
  return first ? { differing, maxDelta, first } : { differing, maxDelta };
}

export interface WaitForPixelsOptions {
  /** per-channel tolerance (e.g. for JPEG); default 0 */
  tolerance?: number;
  /** pixels allowed to differ beyond the tolerance; default 0 */
  maxDiffering?: number;
  /** pause between captures; default 100 */
  intervalMs?: number;
}

/**
 * Calls `capture` until its picture equals `expected` (within the options) and returns that capture; throws
 * after `timeoutMs` describing the last difference (or the last capture error).
 */
export async function waitForPixels(capture: () => Promise<Capture>, expected: Capture, timeoutMs: number, opts: WaitForPixelsOptions = {}): Promise<Capture> {
  const t0 = Date.now();
  let last = 'no capture yet';
  for (;;) {
    try {
      const c = await capture();
      const d = comparePixels(c, expected, opts.tolerance ?? 0);
      if (d.differing <= (opts.maxDiffering ?? 0)) return c;
      last =
        c.width !== expected.width || c.height !== expected.height
          ? `size ${c.width}x${c.height}, want ${expected.width}x${expected.height}`
          : `${d.differing} pixels differ (max delta ${d.maxDelta}); first at ${d.first?.x},${d.first?.y}: got ${d.first?.got}, want ${d.first?.want}`;
    } catch (e) {
      last = `capture failed: ${(e as Error).message}`;
    }
    if (Date.now() - t0 >= timeoutMs) throw new Error(`picture not as expected after ${timeoutMs} ms: ${last}`);
    await sleep(opts.intervalMs ?? 100);
  }
}

// ---------------------------------------------------------------------------------------------------------
// QEMU's VNC server as the reference

export interface QemuVncOptions {
  /** VNC auth password (QEMU `password-secret`) */
  password?: string;
  /** QEMU `share=`; default QEMU's allow-exclusive */
  share?: 'allow-exclusive' | 'force-shared' | 'ignore';
  /** also listen for WebSocket (noVNC) connections */
  websocket?: boolean;
  /** QEMU binary; default the test environment's (scripts/test-env.sh), else qemu-system-x86_64 on PATH */
  qemu?: string;
}

export interface QemuVnc {
  readonly port: number;
  /** WebSocket port when `websocket` was set */
  readonly wsPort?: number;
  readonly pid: number;
  readonly qemu: string;
  /** std VGA VBE mode switch (32 bpp XRGB8888); clients get a DesktopSize */
  setMode(width: number, height: number): Promise<void>;
  /** writes raw bytes (B, G, R, X per pixel) into VRAM at `offset` */
  writeVram(data: Buffer, offset?: number): Promise<void>;
  /** setMode + xrgbPattern(width, height, seed) into VRAM; returns the pattern (its `rgb` is what clients must show) */
  showPattern(width: number, height: number, seed?: number): Promise<Pattern>;
  /** QEMU's stderr so far */
  stderr(): string;
  close(): Promise<void>;
}

/** Whether `qemu` has the qtest accelerator (Debian bookworm's 7.2 build does not; trixie's 10.x/11.x do). */
export function qemuHasQtest(qemu: string): boolean {
  const r = spawnSync(qemu, ['-machine', 'none', '-accel', 'qtest', '-display', 'none', '-nodefaults', '-monitor', 'stdio'], {
    input: 'quit\n',
    timeout: 10_000,
    stdio: ['pipe', 'ignore', 'ignore'],
  });
  return r.status === 0;
}

let qemuFound: string | null | undefined;
/**
 * The QEMU to use as reference server: the test environment's private QEMU (scripts/test-env.sh), else
 * qemu-system-x86_64 on PATH — the first with the qtest accelerator; undefined if none.
 */
export function findQemu(): string | undefined {
  if (qemuFound !== undefined) return qemuFound ?? undefined;
  const candidates: string[] = [];
  try {
    candidates.push(loadTestEnv().qemu);
  } catch {}
  const onPath = which('qemu-system-x86_64');
  if (onPath) candidates.push(onPath);
  qemuFound = candidates.find(qemuHasQtest) ?? null;
  return qemuFound ?? undefined;
}

const VRAM_BASE = 0xfd000000;

/**
 * QEMU with `-accel qtest` (no guest, no firmware run) and std VGA: the harness programs the VGA's PCI BAR,
 * the attribute controller and the Bochs VBE registers over the qtest protocol and writes VRAM directly, so
 * any picture and any mode switch are one call away (~0.2 s to start). VNC on 127.0.0.1 (and WebSocket).
 */
export async function startQemuVnc(opts: QemuVncOptions = {}): Promise<QemuVnc> {
  const qemu = opts.qemu ?? findQemu();
  if (!qemu) throw new Error('no QEMU with the qtest accelerator: run scripts/test-env.sh');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const wsPort = opts.websocket ? await freePort() : undefined;
    if (port < 5900 || port === wsPort) continue;
    let vnc = `127.0.0.1:${port - 5900}`;
    if (opts.password !== undefined) vnc += ',password-secret=vncpw';
    if (opts.share) vnc += `,share=${opts.share}`;
    if (wsPort) vnc += `,websocket=127.0.0.1:${wsPort}`;
    // biome-ignore format: option/value pairs
    const argv = [
      '-machine', 'pc,accel=qtest', '-nodefaults', '-vga', 'std', '-display', 'none', '-m', '64',
      '-qtest', 'stdio', '-qtest-log', '/dev/null',
      ...(opts.password !== undefined ? ['-object', `secret,id=vncpw,data=${opts.password.replace(/,/g, ',,')}`] : []),
      '-vnc', vnc,
    ];
    const child = track(spawnTied(qemu, argv, { stdio: ['pipe', 'pipe', 'pipe'] }), true);
    let err = '';
    child.stderr?.on('data', (d) => (err += d));
    child.stdin?.on('error', () => {});
    const waiters: ((l: string) => void)[] = [];
    const rl = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    rl.on('line', (l) => {
      if (/^(OK|FAIL|ERR)/.test(l)) waiters.shift()?.(l);
    });
    const exited = exitOf(child);
    exited.then(() => {
      for (const w of waiters.splice(0)) w('ERR qemu exited');
    });
    const cmd = (c: string) =>
      new Promise<string>((res, rej) => {
        if (child.exitCode !== null || child.signalCode !== null) return rej(new Error(`QEMU has exited: ${tail(err)}`));
        // a ref'd timer: keeps the event loop alive while we wait (QEMU's pipes are unref'd) and catches hangs
        const t = setTimeout(() => rej(new Error(`qtest '${c.slice(0, 60)}': no answer within 30 s ${tail(err)}`)), 30_000);
        waiters.push((l) => {
          clearTimeout(t);
          if (l.startsWith('OK')) res(l);
          else rej(new Error(`qtest '${c.slice(0, 60)}': ${l} ${tail(err)}`));
        });
        child.stdin?.write(`${c}\n`);
      });
    const hex = (n: number) => `0x${n.toString(16)}`;
    try {
      // std VGA is 00:02.0: BAR0 (VRAM) at VRAM_BASE, memory + I/O decoding on
      await cmd('outl 0xcf8 0x80001010');
      await cmd(`outl 0xcfc ${hex(VRAM_BASE)}`);
      await cmd('outl 0xcf8 0x80001004');
      await cmd('outw 0xcfc 0x3');
      // attribute controller: reset the flip-flop, set "palette address source" (else the screen is blank)
      await cmd('inb 0x3da');
      await cmd('outb 0x3c0 0x20');
    } catch (e) {
      await stop(child);
      if (attempt < 3 && /Address already in use|Failed to find an available port/.test(err)) continue;
      throw new Error(`QEMU reference server did not start: ${(e as Error).message}\n${qemu} ${argv.join(' ')}`);
    }
    const vbe = async (index: number, value: number) => {
      await cmd(`outw 0x1ce ${hex(index)}`);
      await cmd(`outw 0x1cf ${hex(value)}`);
    };
    const setMode = async (w: number, h: number) => {
      await vbe(4, 0); // disable
      await vbe(1, w);
      await vbe(2, h);
      await vbe(3, 32);
      await vbe(4, 0x41); // enabled | linear frame buffer
    };
    const writeVram = async (data: Buffer, offset = 0) => {
      const chunk = 4 << 20;
      for (let at = 0; at < data.length; at += chunk) {
        const part = data.subarray(at, at + chunk);
        await cmd(`b64write ${hex(VRAM_BASE + offset + at)} ${hex(part.length)} ${part.toString('base64')}`);
      }
    };
    return {
      port,
      ...(wsPort ? { wsPort } : {}),
      pid: child.pid as number,
      qemu,
      setMode,
      writeVram,
      async showPattern(w, h, seed = 0) {
        const p = xrgbPattern(w, h, seed);
        await setMode(w, h);
        await writeVram(p.raw);
        return p;
      },
      stderr: () => err,
      close: async () => {
        rl.close();
        await stop(child);
      },
    };
  }
}
