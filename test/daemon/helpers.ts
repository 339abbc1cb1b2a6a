// Shared helpers for the daemon/CLI end-to-end tests: spawn the real daemon
// process on private temporary directories, run the real CLI against it, and
// make sure no process outlives the tests. No tests here.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The compiled CLI (this file lives at dist/test/daemon/helpers.js once built). */
export const CLI = fileURLToPath(new URL('../../src/daemon/cli.js', import.meta.url));

export const PARENT = 'mediated0';
export const MiB = 1024 * 1024;
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const TYPES = ['mediated-bochs-small', 'mediated-bochs-medium', 'mediated-bochs-large', 'mediated-tty-1', 'mediated-tty-2'];

const live = new Set<ChildProcess>();
process.on('exit', () => {
  // Last resort: never leave a daemon behind, even if a test forgot its after() hook.
  for (const c of live) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

/** A clean environment: no inherited MEDIATED_* variables steer the CLI or daemon elsewhere. */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const k of Object.keys(env)) if (k.startsWith('MEDIATED_')) delete env[k];
  return { ...env, ...extra };
}

export interface Dirs {
  root: string;
  /** Not created in advance: the daemon creates it (and must make it 0700). */
  run: string;
  state: string;
}

export function tempDirs(tag: string): Dirs {
  const root = mkdtempSync(join(tmpdir(), `mediated-e2e-${tag}-`));
  return { root, run: join(root, 'run'), state: join(root, 'state') };
}

export function removeDirs(d: Dirs): void {
  rmSync(d.root, { recursive: true, force: true });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Resolves once a connection to the UNIX socket at `path` succeeds. */
function tryConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The real daemon as a child process. */
export class DaemonProcess {
  stderr = '';
  stdout = '';
  private readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly child: ChildProcess,
    readonly dirs: Dirs,
  ) {
    live.add(child);
    child.stderr?.setEncoding('utf8').on('data', (s: string) => {
      this.stderr += s;
    });
    child.stdout?.setEncoding('utf8').on('data', (s: string) => {
      this.stdout += s;
    });
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  get controlPath(): string {
    return join(this.dirs.run, 'control.sock');
  }

  /** Spawns `cli.js daemon --run-dir D --state-dir S` and waits until its control socket accepts connections. */
  static async start(dirs: Dirs, timeoutMs = 10_000): Promise<DaemonProcess> {
    const child = spawn(process.execPath, [CLI, 'daemon', '--run-dir', dirs.run, '--state-dir', dirs.state], {
      env: cleanEnv(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const d = new DaemonProcess(child, dirs);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!d.alive) throw new Error(`daemon exited during startup (code ${child.exitCode}, signal ${child.signalCode}):\n${d.stderr}`);
      // A kill -9 leaves the old socket file behind: existence alone proves nothing, a connection does.
      if (isSocket(d.controlPath) && (await tryConnect(d.controlPath))) return d;
      if (Date.now() > deadline) {
        await d.kill('SIGKILL');
        throw new Error(`daemon did not open ${d.controlPath} within ${timeoutMs} ms:\n${d.stderr}`);
      }
      await sleep(10);
    }
  }

  /** Sends `signal` and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.alive) this.child.kill(signal);
    return this.exited;
  }

  /** Kills it (SIGTERM, then SIGKILL after a grace period); for after() hooks. */
  async dispose(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.alive && this.child.kill('SIGKILL'), 3000);
    await this.exited;
    clearTimeout(t);
  }
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the real CLI; never throws on a non-zero exit. */
export function cli(args: string[], opts: { env?: Record<string, string> } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { env: cleanEnv(opts.env), timeout: 15_000 }, (err, stdout, stderr) => {
      if (err && typeof (err as { code?: unknown }).code !== 'number') {
        reject(new Error(`cannot run the CLI (${args.join(' ')}): ${err.message}\n${stderr}`));
        return;
      }
      resolve({ code: err ? ((err as { code: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** A CLI bound to one daemon through --run-dir. */
export function cliFor(dirs: Dirs): (...args: string[]) => Promise<CliResult> {
  return (...args) => cli(['--run-dir', dirs.run, ...args]);
}

/** Same, but finding the daemon through MEDIATED_RUN_DIR only. */
export function cliEnvFor(dirs: Dirs): (...args: string[]) => Promise<CliResult> {
  return (...args) => cli(args, { env: { MEDIATED_RUN_DIR: dirs.run } });
}

/** Asserts success and returns stdout. */
export async function ok(p: Promise<CliResult>): Promise<string> {
  const r = await p;
  if (r.code !== 0) throw new Error(`CLI failed with exit code ${r.code}:\n${r.stderr}`);
  return r.stdout;
}

export async function okJson<T = unknown>(p: Promise<CliResult>): Promise<T> {
  return JSON.parse(await ok(p)) as T;
}

export interface TypeInfo {
  available_instances: number;
  device_api: string;
  name: string;
  description: string;
}

/** `types --dumpjson` flattened to { typeId: info } for mediated0. */
export async function typesOf(run: (...args: string[]) => Promise<CliResult>): Promise<Record<string, TypeInfo>> {
  const doc = await okJson<Record<string, Record<string, TypeInfo>[]>[]>(run('types', '--dumpjson'));
  const out: Record<string, TypeInfo> = {};
  for (const t of doc[0]?.[PARENT] ?? []) Object.assign(out, t);
  return out;
}

export async function available(run: (...args: string[]) => Promise<CliResult>): Promise<Record<string, number>> {
  const t = await typesOf(run);
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v.available_instances]));
}

/** `list [--defined] --dumpjson` flattened to { uuid: object } (for one parent). */
export async function listed(run: (...args: string[]) => Promise<CliResult>, defined = false): Promise<Record<string, Record<string, unknown>>> {
  const doc = await okJson<Record<string, Record<string, Record<string, unknown>>[]>[]>(run('list', ...(defined ? ['--defined'] : []), '--dumpjson'));
  const out: Record<string, Record<string, unknown>> = {};
  for (const entry of doc) for (const devs of Object.values(entry)) for (const d of devs) Object.assign(out, d);
  return out;
}

/** Asserts a failed CLI call whose stderr names `code` in a clear one-line message (no stack trace). */
export function expectError(r: CliResult, code: string, mentions?: RegExp, what = ''): void {
  const at = what ? ` (${what})` : '';
  if (r.code === 0) throw new Error(`expected ${code}${at}, but the command succeeded: ${r.stdout}`);
  if (!r.stderr.includes(`(${code})`)) throw new Error(`expected ${code}${at} in stderr, got:\n${r.stderr}`);
  if (!r.stderr.startsWith('mediated: ')) throw new Error(`stderr does not start with "mediated: ":\n${r.stderr}`);
  if (/\n\s+at /.test(r.stderr)) throw new Error(`stderr carries a stack trace:\n${r.stderr}`);
  if (mentions && !mentions.test(r.stderr)) throw new Error(`stderr does not match ${mentions}:\n${r.stderr}`);
}

export function isSocket(path: string): boolean {
  try {
    return statSync(path).isSocket();
  } catch {
    return false;
  }
}
