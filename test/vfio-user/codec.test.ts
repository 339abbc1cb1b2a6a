// The pure codec: the message table, field encode/decode, VERSION JSON and the
// region capability chain. Bytes in, numbers out, no sockets.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  DECODE_OK,
  DECODE_SHORT,
  DECODE_UNSAFE,
  decodeFields,
  decodeRegionCaps,
  encodeFields,
  encodeRegionCaps,
  type Fields,
  isCommand,
  isError,
  isReply,
  MAX_VERSION_JSON,
  newHeader,
  parseVersionCapabilities,
  type RegionCap,
  readHeader,
  readU64,
  versionReplyJson,
  wantsReply,
  writeHeader,
  writeU64,
} from '../../src/vfio-user/codec.js';
import { Command, HEADER_SIZE, MAX_COMMAND, REGION_CAP_MSIX_MAPPABLE, REGION_CAP_SPARSE_MMAP, REGION_CAP_TYPE } from '../../src/vfio-user/constants.js';
import {
  CAP_HEADER,
  DMA_LOGGING_RANGE,
  DMA_LOGGING_REPORT,
  DMA_LOGGING_START,
  DMA_QEMU,
  IO_FD_ENTRY,
  type Layout,
  MESSAGES,
  MIG_DEVICE_STATE,
  messageSpec,
  REGION_WRITE_MULTI_ENTRY,
} from '../../src/vfio-user/messages.js';

const MAX_FOR = { u16: 0xffff, u32: 0xffff_ffff, u64: Number.MAX_SAFE_INTEGER } as const;

/** Distinct, width-filling values per field so a swapped or truncated field shows. */
function sampleValues(layout: Layout, seed: number): Fields {
  const out: Fields = {};
  layout.fields.forEach((f, i) => {
    const max = MAX_FOR[f.type];
    out[f.name] = i % 2 === 0 ? max - seed - i : (seed * 7919 + i * 104729) % max;
  });
  return out;
}

function roundTrip(layout: Layout, seed: number, what: string): void {
  const values = sampleValues(layout, seed);
  // Encode at a non-zero offset to catch absolute/relative offset mix-ups.
  const buf = new Uint8Array(layout.size + 8).fill(0xee);
  const v = new DataView(buf.buffer);
  assert.equal(encodeFields(layout, v, 3, values), layout.size, what);
  assert.equal(buf[2], 0xee, `${what}: wrote before its start`);
  assert.equal(buf[3 + layout.size], 0xee, `${what}: wrote past its size`);
  const out: Fields = {};
  assert.equal(decodeFields(layout, v, 3, layout.size, out), DECODE_OK, what);
  assert.deepEqual(out, values, what);
}

function checkContiguous(layout: Layout, what: string): void {
  let at = 0;
  for (const f of layout.fields) {
    assert.equal(f.offset, at, `${what}.${f.name} offset`);
    at += f.type === 'u16' ? 2 : f.type === 'u32' ? 4 : 8;
  }
  assert.equal(layout.size, at, `${what} size`);
}

describe('message table', () => {
  it('describes every command 1..18 except the retired 14, once each', () => {
    const cmds = MESSAGES.map((m) => m.cmd).sort((a, b) => a - b);
    const expected = [];
    for (let c = 1; c <= MAX_COMMAND; c++) if (c !== Command.DIRTY_PAGES) expected.push(c);
    assert.deepEqual(cmds, expected);
    for (const m of MESSAGES) assert.equal(messageSpec(m.cmd), m);
    assert.equal(messageSpec(Command.DIRTY_PAGES), undefined);
    assert.equal(messageSpec(0), undefined);
    assert.equal(messageSpec(999), undefined);
  });

  it('lays out the fixed parts at the offsets and sizes of the specification', () => {
    const sizes: Record<string, [number, number]> = {
      VERSION: [4, 4],
      DMA_MAP: [32, 0],
      DMA_UNMAP: [24, 24],
      DEVICE_GET_INFO: [4, 16],
      DEVICE_GET_REGION_INFO: [12, 32],
      DEVICE_GET_REGION_IO_FDS: [16, 16],
      DEVICE_GET_IRQ_INFO: [12, 16],
      DEVICE_SET_IRQS: [20, 0],
      REGION_READ: [16, 16],
      REGION_WRITE: [16, 16],
      DMA_READ: [16, 16],
      DMA_WRITE: [16, 0],
      DEVICE_RESET: [0, 0],
      REGION_WRITE_MULTI: [8, 8],
      DEVICE_FEATURE: [8, 8],
      MIG_DATA_READ: [8, 8],
      MIG_DATA_WRITE: [8, 0],
    };
    for (const m of MESSAGES) {
      checkContiguous(m.request, `${m.name} request`);
      checkContiguous(m.reply, `${m.name} reply`);
      assert.deepEqual([m.request.size, m.reply.size], sizes[m.name], m.name);
    }
    // Spot checks of named offsets from the specification tables.
    const f = (cmd: number, dir: 'request' | 'reply', name: string) => messageSpec(cmd)?.[dir].fields.find((x) => x.name === name);
    assert.deepEqual(f(Command.DMA_MAP, 'request', 'address'), { name: 'address', type: 'u64', offset: 16 });
    assert.deepEqual(f(Command.DEVICE_GET_REGION_INFO, 'reply', 'offset'), { name: 'offset', type: 'u64', offset: 24 });
    assert.deepEqual(f(Command.DEVICE_SET_IRQS, 'request', 'count'), { name: 'count', type: 'u32', offset: 16 });
    assert.deepEqual(f(Command.REGION_READ, 'request', 'region'), { name: 'region', type: 'u32', offset: 8 });
    assert.equal(DMA_QEMU.size, 12); // QEMU's u32 count: data at payload offset 12
    assert.equal(CAP_HEADER.size, 8);
    assert.equal(REGION_WRITE_MULTI_ENTRY.size, 24);
    assert.equal(IO_FD_ENTRY.size, 40);
  });

  it('fd rules: only DMA_MAP (one) and SET_IRQS (many) carry request fds; only GET_REGION_INFO replies carry one', () => {
    for (const m of MESSAGES) {
      const req = m.cmd === Command.DMA_MAP ? 'optional-one' : m.cmd === Command.DEVICE_SET_IRQS ? 'many' : 'none';
      assert.equal(m.requestFds, req, m.name);
    }
    assert.equal(messageSpec(Command.DEVICE_GET_REGION_INFO)?.replyFds, 'optional-one');
    assert.equal(messageSpec(Command.DMA_READ)?.from, 'server');
    assert.equal(messageSpec(Command.DMA_WRITE)?.from, 'server');
  });

  it('round-trips every layout of the table and every sub-structure', () => {
    let seed = 1;
    for (const m of MESSAGES) {
      roundTrip(m.request, seed++, `${m.name} request`);
      roundTrip(m.reply, seed++, `${m.name} reply`);
    }
    const subs = { DMA_QEMU, CAP_HEADER, IO_FD_ENTRY, DMA_LOGGING_START, DMA_LOGGING_RANGE, DMA_LOGGING_REPORT, MIG_DEVICE_STATE };
    for (const [name, l] of Object.entries(subs)) {
      checkContiguous(l, name);
      roundTrip(l, seed++, name);
    }
    // The write-multi entry's data is 8 raw bytes; its three numeric fields round-trip.
    const e = REGION_WRITE_MULTI_ENTRY;
    const buf = new Uint8Array(e.size);
    encodeFields(e, new DataView(buf.buffer), 0, { offset: 2 ** 40 + 3, region: 4, count: 8 });
    const out: Fields = {};
    assert.equal(decodeFields(e, new DataView(buf.buffer), 0, e.size, out), DECODE_OK);
    assert.equal(out.offset, 2 ** 40 + 3);
    assert.equal(out.region, 4);
    assert.equal(out.count, 8);
  });

  it('missing values encode as zero', () => {
    const l = messageSpec(Command.DMA_MAP)?.request as Layout;
    const buf = new Uint8Array(l.size).fill(0xff);
    encodeFields(l, new DataView(buf.buffer), 0, { argsz: 32 });
    const out: Fields = {};
    decodeFields(l, new DataView(buf.buffer), 0, l.size, out);
    assert.deepEqual(out, { argsz: 32, flags: 0, offset: 0, address: 0, size: 0 });
  });

  it('short payloads decode as DECODE_SHORT for every non-empty layout', () => {
    for (const m of MESSAGES) {
      for (const l of [m.request, m.reply]) {
        if (l.size === 0) {
          assert.equal(decodeFields(l, new DataView(new ArrayBuffer(0)), 0, 0, {}), DECODE_OK);
          continue;
        }
        const buf = new Uint8Array(l.size);
        const v = new DataView(buf.buffer);
        for (const avail of [0, 1, l.size - 1]) assert.equal(decodeFields(l, v, 0, avail, {}), DECODE_SHORT, `${m.name} avail ${avail}`);
        assert.equal(decodeFields(l, v, 0, l.size, {}), DECODE_OK);
      }
    }
  });

  it('u64 values above 2^53 decode as DECODE_UNSAFE, 2^53 - 1 is fine', () => {
    const l = messageSpec(Command.DMA_UNMAP)?.request as Layout;
    const buf = new Uint8Array(l.size);
    const v = new DataView(buf.buffer);
    v.setUint32(0, 24, true);
    v.setBigUint64(16, 2n ** 53n - 1n, true);
    const out: Fields = {};
    assert.equal(decodeFields(l, v, 0, l.size, out), DECODE_OK);
    assert.equal(out.size, Number.MAX_SAFE_INTEGER);
    v.setBigUint64(16, 2n ** 53n, true);
    assert.equal(decodeFields(l, v, 0, l.size, {}), DECODE_UNSAFE);
    v.setBigUint64(16, 0n, true);
    v.setBigUint64(8, 0xffff_ffff_ffff_ffffn, true); // address
    assert.equal(decodeFields(l, v, 0, l.size, {}), DECODE_UNSAFE);
    assert.ok(Number.isNaN(readU64(v, 8)));
  });

  it('readU64 / writeU64 round-trip values across the 32-bit boundary', () => {
    const v = new DataView(new ArrayBuffer(8));
    for (const x of [0, 1, 0xffff_ffff, 2 ** 32, 2 ** 32 + 5, 2 ** 52 + 12345, Number.MAX_SAFE_INTEGER]) {
      writeU64(v, 0, x);
      assert.equal(v.getBigUint64(0, true), BigInt(x));
      assert.equal(readU64(v, 0), x);
    }
  });
});

describe('header', () => {
  it('writes and reads the 16-byte header little-endian', () => {
    const buf = new Uint8Array(HEADER_SIZE + 4);
    const v = new DataView(buf.buffer);
    writeHeader(v, 2, 0xbeef, Command.REGION_WRITE, 0x12345678, 0x31, 22);
    assert.deepEqual([...buf.subarray(2, 18)], [0xef, 0xbe, 10, 0, 0x78, 0x56, 0x34, 0x12, 0x31, 0, 0, 0, 22, 0, 0, 0]);
    const h = newHeader();
    readHeader(v, 2, h);
    assert.deepEqual(h, { id: 0xbeef, cmd: 10, size: 0x12345678, flags: 0x31, error: 22 });
  });

  it('classifies type bits and flags', () => {
    assert.ok(isCommand(0) && !isReply(0) && wantsReply(0) && !isError(0));
    assert.ok(isReply(1) && !isCommand(1));
    assert.ok(!wantsReply(0x10));
    assert.ok(isReply(0x21) && isError(0x21));
    assert.ok(!isCommand(2) && !isReply(2)); // unknown type
    assert.ok(!isCommand(0xf) && !isReply(0xf));
  });
});

const enc = (s: string, nul = true) => new Uint8Array(Buffer.from(nul ? `${s}\0` : s));

describe('VERSION capabilities', () => {
  const DEFAULTS = {
    maxMsgFds: 1,
    maxDataXferSize: 1 << 20,
    pgsizes: 4096,
    maxDmaMaps: 65535,
    writeMultiple: false,
    twinSocket: false,
    migration: null,
    unknownKeys: [],
  };

  it('takes the specification defaults for absent JSON, {} and empty capabilities', () => {
    assert.deepEqual(parseVersionCapabilities(new Uint8Array(0)), DEFAULTS);
    assert.deepEqual(parseVersionCapabilities(new Uint8Array([0])), DEFAULTS);
    assert.deepEqual(parseVersionCapabilities(enc('{}')), DEFAULTS);
    assert.deepEqual(parseVersionCapabilities(enc('{"capabilities":{}}')), DEFAULTS);
  });

  it("parses QEMU's real capability string (vfio-user.md §5)", () => {
    const qemu =
      '{"capabilities": {"pgsizes": 4096, "max_msg_fds": 16, "max_dma_maps": 65535, "max_data_xfer_size": 1048576, "migration": {"max_bitmap_size": 268435456, "pgsize": 4096}, "write_multiple": true}}';
    assert.deepEqual(parseVersionCapabilities(enc(qemu)), {
      maxMsgFds: 16,
      maxDataXferSize: 1048576,
      pgsizes: 4096,
      maxDmaMaps: 65535,
      writeMultiple: true,
      twinSocket: false,
      migration: { pgsize: 4096, maxBitmapSize: 268435456 },
      unknownKeys: [],
    });
  });

  it("parses libvfio-user's server reply and ignores bytes after the NUL", () => {
    const bytes = new Uint8Array([...enc('{"capabilities":{"max_msg_fds":8,"max_data_xfer_size":1048576}}'), ...Buffer.from('{garbage')]);
    const c = parseVersionCapabilities(bytes);
    assert.equal(c.maxMsgFds, 8);
    assert.equal(c.maxDataXferSize, 1048576);
  });

  it('lists unknown keys without failing', () => {
    const c = parseVersionCapabilities(enc('{"capabilities":{"max_msg_fds":4,"frobnicate":1,"x":{"y":2}},"other":true}'));
    assert.equal(c.maxMsgFds, 4);
    assert.deepEqual(c.unknownKeys, ['frobnicate', 'x']);
  });

  it('twin_socket counts only when supported is true; migration fields default', () => {
    assert.equal(parseVersionCapabilities(enc('{"capabilities":{"twin_socket":{"supported":true,"fd_index":0}}}')).twinSocket, true);
    assert.equal(parseVersionCapabilities(enc('{"capabilities":{"twin_socket":{"supported":false}}}')).twinSocket, false);
    assert.equal(parseVersionCapabilities(enc('{"capabilities":{"twin_socket":true}}')).twinSocket, false);
    assert.deepEqual(parseVersionCapabilities(enc('{"capabilities":{"migration":{}}}')).migration, { pgsize: 4096, maxBitmapSize: 256 << 20 });
  });

  it('rejects bad types and out-of-range numbers', () => {
    const bad = [
      '{"capabilities":{"max_msg_fds":"16"}}',
      '{"capabilities":{"max_msg_fds":0}}',
      '{"capabilities":{"max_msg_fds":-1}}',
      '{"capabilities":{"max_msg_fds":1.5}}',
      '{"capabilities":{"max_msg_fds":100000}}',
      '{"capabilities":{"max_data_xfer_size":null}}',
      '{"capabilities":{"max_data_xfer_size":2147483648}}',
      '{"capabilities":{"pgsizes":true}}',
      '{"capabilities":{"max_dma_maps":[1]}}',
      '{"capabilities":{"write_multiple":1}}',
      '{"capabilities":{"write_multiple":"true"}}',
      '{"capabilities":{"migration":"yes"}}',
      '{"capabilities":{"migration":null}}',
      '{"capabilities":{"migration":{"pgsize":0}}}',
      '{"capabilities":{"migration":{"max_bitmap_size":-4}}}',
    ];
    for (const s of bad) assert.throws(() => parseVersionCapabilities(enc(s)), /capability/, s);
  });

  it('rejects documents that are not objects or do not parse', () => {
    for (const s of ['[]', '5', '"x"', 'null', 'true', '{"capabilities":[]}', '{"capabilities":null}', '{"capabilities":3}']) {
      assert.throws(() => parseVersionCapabilities(enc(s)), /not an object/, s);
    }
    for (const s of ['{', '{"capabilities":}', "{'a':1}", '\u0001']) {
      assert.throws(() => parseVersionCapabilities(enc(s)), /does not parse/, s);
    }
  });

  it('rejects JSON without its terminating NUL (as libvfio-user and QEMU do)', () => {
    assert.throws(() => parseVersionCapabilities(enc('{"capabilities":{"max_msg_fds":8}}', false)), /NUL/);
    assert.throws(() => parseVersionCapabilities(enc('{}', false)), /NUL/);
  });

  it('rejects JSON longer than the limit', () => {
    const long = `{"capabilities":{"pad":"${'x'.repeat(MAX_VERSION_JSON)}"}}`;
    assert.throws(() => parseVersionCapabilities(enc(long)), /too long/);
  });

  it('our reply JSON is short, NUL-terminated and explicit about fds and transfer size', () => {
    const bytes = versionReplyJson(16, 1 << 20);
    assert.equal(bytes.at(-1), 0);
    assert.equal(bytes.indexOf(0), bytes.length - 1);
    assert.ok(bytes.length < 100, `${bytes.length} bytes`);
    const doc = JSON.parse(Buffer.from(bytes.subarray(0, -1)).toString());
    assert.deepEqual(doc, { capabilities: { max_msg_fds: 16, max_data_xfer_size: 1048576 } });
    const c = parseVersionCapabilities(versionReplyJson(8, 4096, { write_multiple: true }));
    assert.equal(c.maxMsgFds, 8);
    assert.equal(c.maxDataXferSize, 4096);
    assert.equal(c.writeMultiple, true);
  });
});

describe('region capability chain', () => {
  const caps: RegionCap[] = [
    {
      id: REGION_CAP_SPARSE_MMAP,
      areas: [
        { offset: 0, size: 0x1000 },
        { offset: 0x2000, size: 2 ** 33 },
      ],
    },
    { id: REGION_CAP_TYPE, type: 0x8000_1af4, subtype: 0xffff_fffe },
    { id: REGION_CAP_MSIX_MAPPABLE },
  ];

  it('encodes headers with version 1 and next offsets counted from the payload start', () => {
    const bytes = encodeRegionCaps(caps, 32);
    assert.equal(bytes.length, 8 + 8 + 2 * 16 + 8 + 8 + 8);
    const v = new DataView(bytes.buffer);
    // sparse mmap at 32: {id 1, v1, next 80}, nr_areas 2, reserved 0, areas
    assert.deepEqual([v.getUint16(0, true), v.getUint16(2, true), v.getUint32(4, true)], [1, 1, 80]);
    assert.equal(v.getUint32(8, true), 2);
    assert.equal(v.getUint32(12, true), 0);
    assert.equal(v.getBigUint64(16, true), 0n);
    assert.equal(v.getBigUint64(24, true), 0x1000n);
    assert.equal(v.getBigUint64(32, true), 0x2000n);
    assert.equal(v.getBigUint64(40, true), 2n ** 33n);
    // type at 80: next 96
    assert.deepEqual([v.getUint16(48, true), v.getUint16(50, true), v.getUint32(52, true)], [2, 1, 96]);
    assert.deepEqual([v.getUint32(56, true), v.getUint32(60, true)], [0x8000_1af4, 0xffff_fffe]);
    // msix mappable at 96: last, next 0
    assert.deepEqual([v.getUint16(64, true), v.getUint16(66, true), v.getUint32(68, true)], [3, 1, 0]);
  });

  it('decodes what it encodes (sparse mmap with two areas + type cap)', () => {
    const chain = encodeRegionCaps(caps, 32);
    const payload = new Uint8Array(32 + chain.length);
    payload.set(chain, 32);
    assert.deepEqual(decodeRegionCaps(payload, 32), caps);
    // A single cap ends the chain at once.
    const one = encodeRegionCaps([caps[1] as RegionCap], 32);
    assert.equal(new DataView(one.buffer).getUint32(4, true), 0);
    const p1 = new Uint8Array(48);
    p1.set(one, 32);
    assert.deepEqual(decodeRegionCaps(p1, 32), [caps[1]]);
    assert.deepEqual(decodeRegionCaps(p1, 0), []); // cap_offset 0: no chain
  });

  it('skips unknown capability ids but follows their next pointer', () => {
    const chain = encodeRegionCaps([{ id: REGION_CAP_MSIX_MAPPABLE }, caps[1] as RegionCap], 32);
    new DataView(chain.buffer).setUint16(0, 0x77, true); // unknown id, next still 40
    const payload = new Uint8Array(32 + chain.length);
    payload.set(chain, 32);
    assert.deepEqual(decodeRegionCaps(payload, 32), [caps[1]]);
  });

  it('rejects loops, offsets past the end and truncated bodies', () => {
    const chain = encodeRegionCaps(caps, 32);
    const payload = new Uint8Array(32 + chain.length);
    payload.set(chain, 32);
    const v = new DataView(payload.buffer);
    const loop = payload.slice();
    new DataView(loop.buffer).setUint32(32 + 52, 32, true); // type cap points back to the first
    assert.throws(() => decodeRegionCaps(loop, 32), /bad capability offset/);
    assert.throws(() => decodeRegionCaps(payload, payload.length - 4), /bad capability offset/);
    assert.throws(() => decodeRegionCaps(payload.subarray(0, 32 + 20), 32), /truncated sparse-mmap/);
    v.setUint32(40, 1000, true); // nr_areas far beyond the payload
    assert.throws(() => decodeRegionCaps(payload, 32), /truncated sparse-mmap areas/);
    const typeOnly = new Uint8Array(32 + 12);
    typeOnly.set(encodeRegionCaps([caps[1] as RegionCap], 32).subarray(0, 12), 32);
    assert.throws(() => decodeRegionCaps(typeOnly, 32), /truncated type/);
  });
});
