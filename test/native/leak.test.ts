// fd and mapping leak test: 2,000 exchanges of an eventfd + a memfd through reader mode.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { it } from 'node:test';
import {
  close,
  eventfd,
  eventfdRead,
  eventfdWrite,
  fdCount,
  MSG_CTRUNC,
  memfd,
  mmap,
  munmap,
  newStatus,
  ST_FDS,
  ST_FLAGS,
  ST_NFDS,
  ST_OFFSET,
  send,
  socketpair,
  watch,
  watchClose,
} from '../../src/native/index.js';

const mapCount = () => readFileSync('/proc/self/maps', 'utf8').split('\n').length;

it('2,000 exchanges of 2 fds leave fd and mapping counts stable', async () => {
  const ROUNDS = 2000;
  const [tx, rx] = socketpair();
  const base = fdCount();
  const baseMaps = mapCount();
  const buf = new Uint8Array(4096);
  const st = newStatus();
  const msg = new Uint8Array(16);
  let received = 0;
  let next!: () => void;
  let failure: Error | undefined;
  const samples: number[] = [];

  const h = watch(
    rx,
    buf,
    st,
    (n) => {
      try {
        assert.equal(n, 16);
        assert.equal(st[ST_FLAGS] & MSG_CTRUNC, 0);
        assert.equal(st[ST_NFDS], 2);
        const efd = st[ST_FDS];
        const mfd = st[ST_FDS + 1];
        const view = new Uint32Array(mmap(mfd, 8192));
        assert.equal(view[1024], received); // the sender's stamp, through the received memfd
        munmap(view.buffer as ArrayBuffer);
        assert.equal(eventfdRead(efd), received + 1);
        assert.equal(close(efd), 0);
        assert.equal(close(mfd), 0);
        st[ST_OFFSET] = 0; // message consumed
        received++;
      } catch (err) {
        failure = err as Error;
      }
      next();
    },
    () => {},
  );

  for (let i = 0; i < ROUNDS && !failure; i++) {
    const efd = eventfd();
    const mfd = memfd('leak', 8192);
    const w = mmap(mfd, 8192);
    new Uint32Array(w)[1024] = i;
    munmap(w);
    eventfdWrite(efd, i + 1);
    const got = new Promise<void>((r) => {
      next = r;
    });
    assert.equal(send(tx, msg, 0, msg.length, [efd, mfd]), msg.length);
    close(efd); // the receiver holds its own duplicates
    close(mfd);
    await got;
    if (i % 250 === 0) samples.push(fdCount());
  }
  if (failure) throw failure;
  assert.equal(received, ROUNDS);
  watchClose(h);
  const end = fdCount();
  assert.ok(Math.abs(end - base) <= 2, `fd count ${base} -> ${end}`);
  assert.ok(Math.max(...samples) - Math.min(...samples) <= 2, `fd counts drifted: ${samples.join(' ')}`);
  assert.ok(mapCount() - baseMaps < 50, `mappings ${baseMaps} -> ${mapCount()}`);
  close(tx);
  close(rx);
});
