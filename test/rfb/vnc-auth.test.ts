// DES (FIPS 46-3) known answers and VNC authentication.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { checkResponse, desDecryptBlock, desEncryptBlock, makeChallenge, respond, vncKey } from '../../src/display/rfb/vnc-auth.js';

const hex = (s: string): Uint8Array => Uint8Array.from(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex').toUpperCase();

describe('DES', () => {
  it('matches known-answer vectors', () => {
    const vectors: [string, string, string][] = [
      ['133457799BBCDFF1', '0123456789ABCDEF', '85E813540F0AB405'],
      ['0000000000000000', '0000000000000000', '8CA64DE9C1B123A7'],
      ['FFFFFFFFFFFFFFFF', 'FFFFFFFFFFFFFFFF', '7359B2163E4EDC58'],
      ['3000000000000000', '1000000000000001', '958E6E627A05557B'],
      ['1111111111111111', '1111111111111111', 'F40379AB9E0EC533'],
      ['0123456789ABCDEF', '1111111111111111', '17668DFC7292532D'],
      ['FEDCBA9876543210', '0123456789ABCDEF', 'ED39D950FA74BCC4'],
    ];
    for (const [key, plain, cipher] of vectors) {
      assert.equal(toHex(desEncryptBlock(hex(key), hex(plain))), cipher, key);
      assert.equal(toHex(desDecryptBlock(hex(key), hex(cipher))), plain, key);
    }
    assert.throws(() => desEncryptBlock(new Uint8Array(7), new Uint8Array(8)), RangeError);
  });

  it('agrees with OpenSSL (legacy provider) on random keys and blocks', (t) => {
    const cases = Array.from({ length: 32 }, () => [randomBytes(8).toString('hex'), randomBytes(8).toString('hex')]);
    const script = `const c=require('crypto');const out=[];for(const [k,p] of ${JSON.stringify(cases)}){const e=c.createCipheriv('des-ecb',Buffer.from(k,'hex'),null);e.setAutoPadding(false);out.push(Buffer.concat([e.update(Buffer.from(p,'hex')),e.final()]).toString('hex'))}console.log(JSON.stringify(out))`;
    const r = spawnSync(process.execPath, ['--openssl-legacy-provider', '-e', script], { encoding: 'utf8' });
    if (r.status !== 0) {
      t.skip('DES unavailable in this OpenSSL');
      return;
    }
    const want = JSON.parse(r.stdout) as string[];
    for (const [i, [k, p]] of cases.entries()) assert.equal(toHex(desEncryptBlock(hex(k!), hex(p!))), want[i]!.toUpperCase());
  });
});

describe('VNC authentication', () => {
  it('derives the key by truncating/padding the password and reversing each byte', () => {
    assert.deepEqual([...vncKey('a')], [0x86, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(vncKey('password123'), vncKey('password'));
    assert.deepEqual([...vncKey('')], [0, 0, 0, 0, 0, 0, 0, 0]);
  });

  it('a known response: password "password", challenge 00..0f', () => {
    const challenge = Uint8Array.from({ length: 16 }, (_, i) => i);
    // DES key = bit-reversed "password" = 0E 86 CE CE EE F6 4E 26
    assert.equal(toHex(vncKey('password')), '0E86CECEEEF64E26');
    const resp = respond('password', challenge);
    assert.equal(toHex(resp.subarray(0, 8)), toHex(desEncryptBlock(hex('0E86CECEEEF64E26'), challenge.subarray(0, 8))));
    assert.equal(toHex(resp.subarray(8)), toHex(desEncryptBlock(hex('0E86CECEEEF64E26'), challenge.subarray(8))));
  });

  it('round-trips and rejects wrong passwords or malformed input', () => {
    const c = makeChallenge();
    assert.equal(c.length, 16);
    assert.notDeepEqual(c, makeChallenge());
    const r = respond('s3cret', c);
    assert.equal(checkResponse('s3cret', c, r), true);
    assert.equal(checkResponse('s3cret!', c, r), false);
    assert.equal(checkResponse('', c, r), false);
    assert.equal(checkResponse('longpassword-A', c, respond('longpassword-B', c)), true, 'only 8 bytes count');
    const flipped = Uint8Array.from(r);
    flipped[15]! ^= 1;
    assert.equal(checkResponse('s3cret', c, flipped), false);
    assert.equal(checkResponse('s3cret', c, r.subarray(0, 15)), false);
    assert.equal(checkResponse('s3cret', c.subarray(0, 8), r), false);
    assert.throws(() => respond('x', new Uint8Array(8)), RangeError);
  });
});
