// The one table of vfio-user message layouts. Every command's request and reply
// is described here as fixed fields plus an optional variable tail; the codec
// (codec.ts) reads and writes messages only through these descriptions.
import { Command } from './constants.js';

export type FieldType = 'u16' | 'u32' | 'u64';
const SIZE: Record<FieldType, number> = { u16: 2, u32: 4, u64: 8 };

/** What follows the fixed fields of a message. */
export type Tail =
  | 'none'
  | 'json' // NUL-terminated JSON text (VERSION)
  | 'data' // raw bytes, length given by a count field or by the message size
  | 'caps' // region-info capability chain
  | 'bools' // one u8 per vector (SET_IRQS with DATA_BOOL)
  | 'io-fds' // GET_REGION_IO_FDS entries
  | 'writes' // REGION_WRITE_MULTI entries
  | 'feature'; // DEVICE_FEATURE payload

export interface Field {
  readonly name: string;
  readonly type: FieldType;
  readonly offset: number;
}

export interface Layout {
  readonly size: number;
  readonly fields: readonly Field[];
  readonly tail: Tail;
}

function layout(spec: ReadonlyArray<readonly [string, FieldType]>, tail: Tail = 'none'): Layout {
  let offset = 0;
  const fields: Field[] = [];
  for (const [name, type] of spec) {
    fields.push({ name, type, offset });
    offset += SIZE[type];
  }
  return { size: offset, fields, tail };
}

/** fd rules per direction: none allowed, at most one, or any number (bounded by max_msg_fds). */
export type FdRule = 'none' | 'optional-one' | 'many';

export interface MessageSpec {
  readonly cmd: number;
  readonly name: string;
  /** Who sends the request: the client (QEMU) or the server (us). */
  readonly from: 'client' | 'server';
  readonly request: Layout;
  readonly reply: Layout;
  readonly requestFds: FdRule;
  readonly replyFds: FdRule;
}

const EMPTY = layout([]);

const REGION_INFO = layout(
  [
    ['argsz', 'u32'],
    ['flags', 'u32'],
    ['index', 'u32'],
    ['cap_offset', 'u32'],
    ['size', 'u64'],
    ['offset', 'u64'],
  ],
  'caps',
);
const IRQ_INFO = layout([
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['index', 'u32'],
  ['count', 'u32'],
]);
const ACCESS = layout([
  ['offset', 'u64'],
  ['region', 'u32'],
  ['count', 'u32'],
]);
const DMA_UNMAP = layout([
  ['argsz', 'u32'],
  ['flags', 'u32'],
  ['address', 'u64'],
  ['size', 'u64'],
]);
const MIG_DATA = layout([
  ['argsz', 'u32'],
  ['size', 'u32'],
]);

export const MESSAGES: readonly MessageSpec[] = [
  {
    cmd: Command.VERSION,
    name: 'VERSION',
    from: 'client',
    request: layout(
      [
        ['major', 'u16'],
        ['minor', 'u16'],
      ],
      'json',
    ),
    reply: layout(
      [
        ['major', 'u16'],
        ['minor', 'u16'],
      ],
      'json',
    ),
    requestFds: 'none',
    replyFds: 'optional-one', // only with twin-socket, which we never accept
  },
  {
    cmd: Command.DMA_MAP,
    name: 'DMA_MAP',
    from: 'client',
    request: layout([
      ['argsz', 'u32'],
      ['flags', 'u32'],
      ['offset', 'u64'],
      ['address', 'u64'],
      ['size', 'u64'],
    ]),
    reply: EMPTY,
    requestFds: 'optional-one',
    replyFds: 'none',
  },
  { cmd: Command.DMA_UNMAP, name: 'DMA_UNMAP', from: 'client', request: DMA_UNMAP, reply: DMA_UNMAP, requestFds: 'none', replyFds: 'none' },
  {
    cmd: Command.DEVICE_GET_INFO,
    name: 'DEVICE_GET_INFO',
    from: 'client',
    request: layout([['argsz', 'u32']]),
    // QEMU accepts exactly these 16 bytes (the kernel struct's cap_offset breaks it).
    reply: layout([
      ['argsz', 'u32'],
      ['flags', 'u32'],
      ['num_regions', 'u32'],
      ['num_irqs', 'u32'],
    ]),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.DEVICE_GET_REGION_INFO,
    name: 'DEVICE_GET_REGION_INFO',
    from: 'client',
    request: layout([
      ['argsz', 'u32'],
      ['flags', 'u32'],
      ['index', 'u32'],
    ]),
    reply: REGION_INFO,
    requestFds: 'none',
    replyFds: 'optional-one',
  },
  {
    cmd: Command.DEVICE_GET_REGION_IO_FDS,
    name: 'DEVICE_GET_REGION_IO_FDS',
    from: 'client',
    request: layout([
      ['argsz', 'u32'],
      ['flags', 'u32'],
      ['index', 'u32'],
      ['count', 'u32'],
    ]),
    reply: layout(
      [
        ['argsz', 'u32'],
        ['flags', 'u32'],
        ['index', 'u32'],
        ['count', 'u32'],
      ],
      'io-fds',
    ),
    requestFds: 'none',
    replyFds: 'many',
  },
  {
    cmd: Command.DEVICE_GET_IRQ_INFO,
    name: 'DEVICE_GET_IRQ_INFO',
    from: 'client',
    request: layout([
      ['argsz', 'u32'],
      ['flags', 'u32'],
      ['index', 'u32'],
    ]),
    reply: IRQ_INFO,
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.DEVICE_SET_IRQS,
    name: 'DEVICE_SET_IRQS',
    from: 'client',
    request: layout(
      [
        ['argsz', 'u32'],
        ['flags', 'u32'],
        ['index', 'u32'],
        ['start', 'u32'],
        ['count', 'u32'],
      ],
      'bools',
    ),
    reply: EMPTY,
    requestFds: 'many',
    replyFds: 'none',
  },
  {
    cmd: Command.REGION_READ,
    name: 'REGION_READ',
    from: 'client',
    request: ACCESS,
    reply: layout(
      [
        ['offset', 'u64'],
        ['region', 'u32'],
        ['count', 'u32'],
      ],
      'data',
    ),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.REGION_WRITE,
    name: 'REGION_WRITE',
    from: 'client',
    request: layout(
      [
        ['offset', 'u64'],
        ['region', 'u32'],
        ['count', 'u32'],
      ],
      'data',
    ),
    reply: ACCESS,
    requestFds: 'none',
    replyFds: 'none',
  },
  // DMA_READ/DMA_WRITE as the specification lays them out; QEMU's layout is DMA_QEMU below.
  {
    cmd: Command.DMA_READ,
    name: 'DMA_READ',
    from: 'server',
    request: layout([
      ['address', 'u64'],
      ['count', 'u64'],
    ]),
    reply: layout(
      [
        ['address', 'u64'],
        ['count', 'u64'],
      ],
      'data',
    ),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.DMA_WRITE,
    name: 'DMA_WRITE',
    from: 'server',
    request: layout(
      [
        ['address', 'u64'],
        ['count', 'u64'],
      ],
      'data',
    ),
    reply: EMPTY, // spec says {address, u32 count}; QEMU sends a bare header: accept either
    requestFds: 'none',
    replyFds: 'none',
  },
  { cmd: Command.DEVICE_RESET, name: 'DEVICE_RESET', from: 'client', request: EMPTY, reply: EMPTY, requestFds: 'none', replyFds: 'none' },
  {
    cmd: Command.REGION_WRITE_MULTI,
    name: 'REGION_WRITE_MULTI',
    from: 'client',
    request: layout([['wr_cnt', 'u64']], 'writes'),
    reply: layout([['wr_cnt', 'u64']]),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.DEVICE_FEATURE,
    name: 'DEVICE_FEATURE',
    from: 'client',
    request: layout(
      [
        ['argsz', 'u32'],
        ['flags', 'u32'],
      ],
      'feature',
    ),
    reply: layout(
      [
        ['argsz', 'u32'],
        ['flags', 'u32'],
      ],
      'feature',
    ),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.MIG_DATA_READ,
    name: 'MIG_DATA_READ',
    from: 'client',
    request: MIG_DATA,
    reply: layout(
      [
        ['argsz', 'u32'],
        ['size', 'u32'],
      ],
      'data',
    ),
    requestFds: 'none',
    replyFds: 'none',
  },
  {
    cmd: Command.MIG_DATA_WRITE,
    name: 'MIG_DATA_WRITE',
    from: 'client',
    request: layout(
      [
        ['argsz', 'u32'],
        ['size', 'u32'],
      ],
      'data',
    ),
    reply: EMPTY,
    requestFds: 'none',
    replyFds: 'none',
  },
];

/** QEMU's DMA_READ/DMA_WRITE: {u64 address, u32 count, data} unpacked (data at payload offset 12). */
export const DMA_QEMU = layout(
  [
    ['address', 'u64'],
    ['count', 'u32'],
  ],
  'data',
);

/** Sub-structures carried in tails. */
/**
 * REGION_WRITE_MULTI entry: offset, region, count, then 8 raw data bytes at 16. The data is not
 * a field: as a u64 any pattern above 2^53 (e.g. an all-ones write) would fail to decode.
 */
export const REGION_WRITE_MULTI_ENTRY: Layout = {
  ...layout([
    ['offset', 'u64'],
    ['region', 'u32'],
    ['count', 'u32'],
  ]),
  size: 24,
};
export const CAP_HEADER = layout([
  ['id', 'u16'],
  ['version', 'u16'],
  ['next', 'u32'],
]);
export const IO_FD_ENTRY = layout([
  ['offset', 'u64'],
  ['size', 'u64'],
  ['fd_index', 'u32'],
  ['type', 'u32'],
  ['flags', 'u32'],
  ['padding', 'u32'],
  ['datamatch', 'u64'],
]);
export const DMA_LOGGING_START = layout([
  ['page_size', 'u64'],
  ['num_ranges', 'u32'],
  ['reserved', 'u32'],
]);
export const DMA_LOGGING_RANGE = layout([
  ['iova', 'u64'],
  ['length', 'u64'],
]);
export const DMA_LOGGING_REPORT = layout([
  ['iova', 'u64'],
  ['length', 'u64'],
  ['page_size', 'u64'],
]);
export const MIG_DEVICE_STATE = layout([
  ['device_state', 'u32'],
  ['data_fd', 'u32'],
]);

const BY_CMD: (MessageSpec | undefined)[] = [];
for (const m of MESSAGES) BY_CMD[m.cmd] = m;

export function messageSpec(cmd: number): MessageSpec | undefined {
  return BY_CMD[cmd];
}
