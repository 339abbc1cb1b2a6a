// listen/connect/accept, send/recv with SCM_RIGHTS, MSG_CTRUNC.
import assert from 'node:assert/strict';
import { closeSync, existsSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  accept,
  close,
  connect,
  EAGAIN,
  ENOBUFS,
  EPIPE,
  eventfd,
  eventfdRead,
  eventfdWrite,
  fdCount,
  listen,
  MAX_FDS,
  MSG_CTRUNC,
  memfd,
  mmap,
  munmap,
  newStatus,
  recv,
  ST_FDS,
  ST_FLAGS,
  ST_NFDS,
  send,
  socketpair,
} from '../../src/native/index.js';

const dir = mkdtempSync(join(tmpdir(), 'mediated-native-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function receivedFds(st: Int32Array): number[] {
  return [...st.subarray(ST_FDS, ST_FDS + st[ST_NFDS])];
}

describe('listen / connect / accept', () => {
  it('accepts a connection; accept is -EAGAIN when none is pending', () => {
    const path = join(dir, 'a.sock');
    const l = listen(path);
    assert.ok(statSync(path).isSocket());
    assert.equal(accept(l), -EAGAIN);
    const c = connect(path);
    const s = accept(l);
    assert.ok(s >= 0);
    const buf = new Uint8Array([1, 2, 3]);
    assert.equal(send(c, buf, 0, 3), 3);
    const rx = new Uint8Array(16);
    const st = newStatus();
    assert.equal(recv(s, rx, 4, 12, st), 3);
    assert.deepEqual([...rx.subarray(4, 7)], [1, 2, 3]);
    assert.equal(st[ST_NFDS], 0);
    assert.equal(recv(s, rx, 0, 16, st), -EAGAIN); // nonblocking
    close(c);
    assert.equal(recv(s, rx, 0, 16, st), 0); // EOF
    assert.equal(send(s, buf, 0, 3), -EPIPE); // MSG_NOSIGNAL: no SIGPIPE
    close(s);
    close(l);
  });

  it('replaces a stale socket file, but never a live server or a non-socket file', () => {
    const path = join(dir, 'stale.sock');
    close(listen(path)); // leaves the socket file behind
    assert.ok(existsSync(path));
    const l = listen(path); // stale: replaced
    assert.throws(
      () => listen(path),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE',
    ); // live
    close(l);
    const file = join(dir, 'plain-file');
    closeSync(openSync(file, 'w'));
    assert.throws(
      () => listen(file),
      (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE',
    );
    assert.ok(statSync(file).isFile());
  });

  it('connect and listen errors are thrown with errno', () => {
    assert.throws(
      () => connect(join(dir, 'nobody.sock')),
      (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.errno === -2 && e.syscall === 'connect',
    );
    assert.throws(() => listen(join(dir, 'x'.repeat(200))), RangeError); // sun_path is 108 bytes
  });
});

describe('send / recv with SCM_RIGHTS', () => {
  it('passes an eventfd and a memfd that refer to the same objects', () => {
    const path = join(dir, 'fds.sock');
    const l = listen(path);
    const c = connect(path);
    const s = accept(l);
    const efd = eventfd();
    const mfd = memfd('shared', 4096);
    const mine = new Uint8Array(mmap(mfd, 4096));
    mine.set([0xde, 0xad, 0xbe, 0xef]);

    const msg = new Uint8Array([42, 0, 0, 0]);
    assert.equal(send(c, msg, 0, 4, [efd, mfd]), 4);
    const rx = new Uint8Array(64);
    const st = newStatus();
    assert.equal(recv(s, rx, 0, 64, st), 4);
    assert.equal(rx[0], 42);
    assert.equal(st[ST_FLAGS] & MSG_CTRUNC, 0);
    const [refd, rmfd] = receivedFds(st);
    assert.equal(st[ST_NFDS], 2);
    assert.notEqual(refd, efd);

    assert.equal(eventfdWrite(refd, 3), 0); // raise through the received copy...
    assert.equal(eventfdRead(efd), 3); // ...seen on the original
    const theirs = new Uint8Array(mmap(rmfd, 4096));
    assert.deepEqual([...theirs.subarray(0, 4)], [0xde, 0xad, 0xbe, 0xef]);
    theirs[4] = 0x77;
    assert.equal(mine[4], 0x77);

    munmap(theirs.buffer as ArrayBuffer);
    munmap(mine.buffer as ArrayBuffer);
    for (const fd of [refd, rmfd, efd, mfd, s, c, l]) assert.equal(close(fd), 0);
  });

  it('fds arrive with the bytes of the sendmsg that carried them', () => {
    const [a, b] = socketpair();
    const efd = eventfd();
    const one = new Uint8Array([1]);
    send(a, one, 0, 1); // A: no fds
    send(a, one, 0, 1, [efd]); // B: 1 fd
    send(a, one, 0, 1, [efd]); // C: 1 fd
    const rx = new Uint8Array(100);
    const st = newStatus();
    // the first read glues A in front of B and stops after B's skb
    assert.equal(recv(b, rx, 0, 100, st), 2);
    assert.equal(st[ST_NFDS], 1);
    close(st[ST_FDS]);
    assert.equal(recv(b, rx, 0, 100, st), 1);
    assert.equal(st[ST_NFDS], 1);
    close(st[ST_FDS]);
    assert.equal(recv(b, rx, 0, 100, st), -EAGAIN);
    assert.equal(st[ST_NFDS], 0);
    for (const fd of [a, b, efd]) close(fd);
  });

  it('reports MSG_CTRUNC when 40 fds are sent (more than MAX_FDS) and leaks nothing', () => {
    const base = fdCount();
    const [a, b] = socketpair();
    const fds = Array.from({ length: 40 }, () => eventfd());
    assert.equal(send(a, new Uint8Array([9]), 0, 1, fds), 1);
    for (const fd of fds) close(fd);
    const st = newStatus();
    assert.equal(recv(b, new Uint8Array(8), 0, 8, st), 1);
    assert.ok(st[ST_FLAGS] & MSG_CTRUNC, 'MSG_CTRUNC reported');
    assert.ok(st[ST_NFDS] <= MAX_FDS);
    const got = receivedFds(st);
    for (const fd of got) assert.equal(close(fd), 0);
    close(a);
    close(b);
    assert.equal(fdCount(), base); // the kernel closed the fds that did not fit
  });

  it('validates arguments', () => {
    const [a, b] = socketpair();
    const buf = new Uint8Array(8);
    const st = newStatus();
    assert.throws(() => recv(b, buf, 4, 8, st), RangeError); // past the end
    assert.throws(() => recv(b, buf, 0, 8, new Int32Array(4)), TypeError); // st too short
    assert.throws(() => recv(b, [] as unknown as Uint8Array, 0, 0, st), TypeError);
    assert.equal(recv(b, buf, 0, 0, st), -ENOBUFS); // never a fake EOF
    assert.throws(() => send(a, buf, 0, 0, [a]), RangeError); // fds need a byte to ride on
    assert.throws(() => send(a, buf, 0, 1, [-1]), RangeError);
    assert.equal(send(a, Buffer.from('hi'), 0, 2, null), 2); // Buffer is a Uint8Array
    close(a);
    close(b);
  });
});
