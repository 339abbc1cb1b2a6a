#!/usr/bin/env node
// Builds build/mediated_native.node from src/native/addon.c with the system C compiler.
// No node-gyp: an N-API addon only needs node_api.h/uv.h; napi_* and uv_* resolve from the
// node binary at load time (docs/node-native-plumbing.md §3). Runs from `npm install`.
// Usage: node scripts/build-native.mjs [--force]    (CC overrides the compiler, default cc)
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, renameSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const src = path.join(root, 'src', 'native', 'addon.c');
const out = path.join(root, 'build', 'mediated_native.node');

function fail(msg) {
  console.error(`build-native: ${msg}`);
  process.exit(1);
}

if (!existsSync(src)) fail(`missing ${src}`);
if (!process.argv.includes('--force') && existsSync(out) && statSync(out).mtimeMs > statSync(src).mtimeMs) {
  process.exit(0); // up to date
}

// Headers next to the running node (official tarballs, nodesource, nvm), else Debian's path.
const candidates = [path.resolve(process.execPath, '../../include/node'), '/usr/include/node'];
const headers = candidates.find((dir) => existsSync(path.join(dir, 'node_api.h')));
if (!headers) {
  fail(
    `node_api.h not found in ${candidates.join(' or ')}.\n` +
      'Install the Node.js development headers (they ship with the nodesource "nodejs" package and ' +
      'official tarballs; on Debian/Ubuntu with distro Node: apt-get install libnode-dev).',
  );
}

const cc = process.env.CC || 'cc';
// Compile to a temporary name and rename: a concurrent or interrupted build never leaves a
// half-written .node for a running process to load.
const tmp = `${out}.${process.pid}.tmp`;
const args = ['-O2', '-shared', '-fPIC', '-Wall', '-Wextra', '-DNAPI_VERSION=8', `-I${headers}`, '-o', tmp, src];
mkdirSync(path.dirname(out), { recursive: true });
console.log(`build-native: ${cc} ${args.join(' ')}`);
const r = spawnSync(cc, args, { stdio: 'inherit' });
if (r.error) {
  rmSync(tmp, { force: true });
  fail(`cannot run ${cc}: ${r.error.message} (install a C compiler, e.g. apt-get install gcc)`);
}
if (r.status !== 0) {
  rmSync(tmp, { force: true });
  fail(`${cc} exited with ${r.status ?? r.signal}`);
}
renameSync(tmp, out);
