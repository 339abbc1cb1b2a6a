// Where the daemon keeps its sockets (run dir) and its definitions (state dir).
import { join } from 'node:path';

function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** --run-dir, else $MEDIATED_RUN_DIR, else $XDG_RUNTIME_DIR/mediated, else /run/mediated (root). */
export function defaultRunDir(flag?: string): string {
  if (flag) return flag;
  if (process.env.MEDIATED_RUN_DIR) return process.env.MEDIATED_RUN_DIR;
  if (isRoot()) return '/run/mediated';
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'mediated');
  return join('/tmp', `mediated-${process.getuid?.() ?? 'user'}`);
}

/** --state-dir, else $MEDIATED_STATE_DIR, else /var/lib/mediated (root), else $XDG_STATE_HOME/mediated. */
export function defaultStateDir(flag?: string): string {
  if (flag) return flag;
  if (process.env.MEDIATED_STATE_DIR) return process.env.MEDIATED_STATE_DIR;
  if (isRoot()) return '/var/lib/mediated';
  const base = process.env.XDG_STATE_HOME ?? join(process.env.HOME ?? '/tmp', '.local', 'state');
  return join(base, 'mediated');
}

export function controlSocket(runDir: string): string {
  return join(runDir, 'control.sock');
}

/** The parent the default configuration creates. */
export const DEFAULT_PARENT = 'mediated0';
