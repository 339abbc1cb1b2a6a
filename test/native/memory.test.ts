// memfd, mmap/munmap, seals, windows above 4 GiB.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { ftruncateSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  addSeals,
  close,
  fileSize,
  getSeals,
  MAX_MAP_LENGTH,
  memfd,
  mmap,
  munmap,
  PAGE_SIZE,
  SEAL_GROW,
  SEAL_SHRINK,
  SEAL_WRITE,
} from '../../src/native/index.js';

const GiB = 2 ** 30;
const MiB = 2 ** 20;

describe('memfd + mmap', () => {
  it('shares writes between two mappings of one memfd', () => {
    const fd = memfd('test-share', 64 * 1024);
    try {
      assert.equal(fileSize(fd), 64 * 1024);
      const a = mmap(fd, 64 * 1024);
      const b = mmap(fd, 16 * 1024, 16 * 1024); // second mapping, different window
      assert.equal(a.byteLength, 64 * 1024);
      const va = new Uint8Array(a);
      const vb = new Uint8Array(b);
      va.set([1, 2, 3, 4], 16 * 1024 + 100);
      assert.deepEqual([...vb.subarray(100, 104)], [1, 2, 3, 4]);
      vb[0] = 0xaa; // and the other way round
      assert.equal(va[16 * 1024], 0xaa);
      munmap(a);
      munmap(b);
    } finally {
      close(fd);
    }
  });

  it('munmap detaches every view; a second munmap throws', () => {
    const fd = memfd('test-detach', 8192);
    const ab = mmap(fd, 8192);
    const u8 = new Uint8Array(ab);
    const u32 = new Uint32Array(ab, 4096, 4);
    u8[0] = 7;
    munmap(ab);
    assert.equal(ab.byteLength, 0);
    assert.equal(u8.byteLength, 0);
    assert.equal(u32.length, 0);
    assert.equal(u8[0], undefined); // reads past a detached view, no fault
    assert.throws(() => munmap(ab), /already unmapped/);
    // the data itself is still in the memfd
    const again = mmap(fd, 4096, 0, false);
    assert.equal(new Uint8Array(again)[0], 7);
    munmap(again);
    close(fd);
  });

  it('munmap refuses buffers it did not create', () => {
    assert.throws(() => munmap(new ArrayBuffer(16)), TypeError);
    assert.throws(() => munmap(new Uint8Array(16) as unknown as ArrayBuffer), TypeError);
    assert.throws(() => munmap(null as unknown as ArrayBuffer), TypeError);
  });

  it('validates length and offset up front', () => {
    const fd = memfd('test-args', 4 * PAGE_SIZE);
    try {
      assert.throws(() => mmap(fd, 0), RangeError);
      assert.throws(() => mmap(fd, PAGE_SIZE, 100), /page size/);
      assert.throws(() => mmap(fd, PAGE_SIZE, 4 * PAGE_SIZE), /file size/); // past EOF = SIGBUS
      assert.throws(() => mmap(fd, 5 * PAGE_SIZE), /file size/);
      assert.throws(() => mmap(-1, PAGE_SIZE), RangeError);
      assert.throws(() => mmap(fd, 1.5), RangeError);
    } finally {
      close(fd);
    }
  });

  it('a 5 GiB sparse memfd: 1 MiB window at 4 GiB + 8192', () => {
    const fd = memfd('test-5g', 5 * GiB);
    try {
      assert.equal(fileSize(fd), 5 * GiB);
      const off = 4 * GiB + 8192;
      const w = mmap(fd, MiB, off);
      const v = new Uint8Array(w);
      v.fill(0x5a, 0, 4096);
      v[MiB - 1] = 0x11;
      // a second, larger window over the same bytes sees the writes
      const w2 = mmap(fd, 2 * MiB, 4 * GiB);
      const v2 = new Uint8Array(w2);
      assert.equal(v2[8192], 0x5a);
      assert.equal(v2[8192 + 4095], 0x5a);
      assert.equal(v2[8192 + 4096], 0);
      assert.equal(v2[8192 + MiB - 1], 0x11);
      assert.equal(v2[8191], 0);
      munmap(w);
      munmap(w2);
    } finally {
      close(fd);
    }
  });

  it('refuses lengths above 4 GiB without crashing; exactly 4 GiB works', () => {
    const fd = memfd('test-big', 5 * GiB);
    try {
      assert.equal(MAX_MAP_LENGTH, 4 * GiB);
      assert.throws(() => mmap(fd, 4 * GiB + PAGE_SIZE), RangeError);
      assert.throws(() => mmap(fd, 5 * GiB), RangeError);
      const ab = mmap(fd, 4 * GiB, PAGE_SIZE);
      assert.equal(ab.byteLength, 4 * GiB);
      const v = new Uint8Array(ab);
      v[4 * GiB - 1] = 9; // last byte of the view = file offset 4 GiB + 4095
      munmap(ab);
      const tail = new Uint8Array(mmap(fd, PAGE_SIZE, 4 * GiB));
      assert.equal(tail[4095], 9);
      munmap(tail.buffer as ArrayBuffer);
    } finally {
      close(fd);
    }
  });

  it('read-only mappings work on a write-sealed memfd', () => {
    const fd = memfd('test-ro', PAGE_SIZE);
    try {
      addSeals(fd, SEAL_WRITE);
      assert.throws(
        () => mmap(fd, PAGE_SIZE),
        (e: NodeJS.ErrnoException) => e.code === 'EPERM',
      );
      const ro = mmap(fd, PAGE_SIZE, 0, false);
      assert.equal(new Uint8Array(ro)[0], 0);
      munmap(ro);
    } finally {
      close(fd);
    }
  });
});

describe('seals', () => {
  it('SEAL_SHRINK | SEAL_GROW block ftruncate in this process and in a child', () => {
    const fd = memfd('test-seal', 8192);
    try {
      assert.equal(getSeals(fd), 0);
      addSeals(fd, SEAL_SHRINK | SEAL_GROW);
      assert.equal(getSeals(fd), SEAL_SHRINK | SEAL_GROW);
      assert.throws(
        () => ftruncateSync(fd, 4096),
        (e: NodeJS.ErrnoException) => e.code === 'EPERM',
      );
      assert.throws(
        () => ftruncateSync(fd, 16384),
        (e: NodeJS.ErrnoException) => e.code === 'EPERM',
      );
      // a child that got the memfd (through /proc/<pid>/fd) cannot shrink it either
      const r = spawnSync(
        process.execPath,
        [
          '-e',
          `const fs=require('fs');const f=fs.openSync('/proc/${process.pid}/fd/${fd}','r+');` +
            `try{fs.ftruncateSync(f,0);console.log('shrunk')}catch(e){console.log(e.code)}`,
        ],
        { encoding: 'utf8' },
      );
      assert.equal(r.stdout.trim(), 'EPERM');
      assert.equal(fileSize(fd), 8192);
    } finally {
      close(fd);
    }
  });

  it('system errors are thrown with code/errno/syscall', () => {
    const fd = memfd('test-closed', 4096);
    close(fd);
    assert.throws(
      () => fileSize(fd),
      (e: NodeJS.ErrnoException) => e.code === 'EBADF' && e.errno === -9 && e.syscall === 'fstat',
    );
    assert.throws(() => memfd('x'.repeat(300), 4096), RangeError);
  });
});
