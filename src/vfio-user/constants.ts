// Wire constants of the vfio-user protocol (QEMU docs/interop/vfio-user.rst).
// Integers on the wire are host-endian; we only run on little-endian hosts.

export const HEADER_SIZE = 16;

/** Command numbers (header offset 2). 14 is retired (migration v1 dirty pages). */
export const Command = {
  VERSION: 1,
  DMA_MAP: 2,
  DMA_UNMAP: 3,
  DEVICE_GET_INFO: 4,
  DEVICE_GET_REGION_INFO: 5,
  DEVICE_GET_REGION_IO_FDS: 6,
  DEVICE_GET_IRQ_INFO: 7,
  DEVICE_SET_IRQS: 8,
  REGION_READ: 9,
  REGION_WRITE: 10,
  DMA_READ: 11,
  DMA_WRITE: 12,
  DEVICE_RESET: 13,
  DIRTY_PAGES: 14,
  REGION_WRITE_MULTI: 15,
  DEVICE_FEATURE: 16,
  MIG_DATA_READ: 17,
  MIG_DATA_WRITE: 18,
} as const;
export type CommandNumber = (typeof Command)[keyof typeof Command];
export const MAX_COMMAND = 18;

export function commandName(cmd: number): string {
  for (const [k, v] of Object.entries(Command)) if (v === cmd) return k;
  return `UNKNOWN(${cmd})`;
}

/** Header flags (offset 8). */
export const MsgType = { COMMAND: 0, REPLY: 1 } as const;
export const FLAG_TYPE_MASK = 0xf;
export const FLAG_NO_REPLY = 0x10;
export const FLAG_ERROR = 0x20;

/** DMA_MAP / DMA_UNMAP flags. */
export const DMA_FLAG_READ = 1;
export const DMA_FLAG_WRITE = 2;
export const DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1;
export const DMA_UNMAP_FLAG_ALL = 2;

/** DEVICE_GET_INFO flags. */
export const DEVICE_FLAG_RESET = 1;
export const DEVICE_FLAG_PCI = 2;

/** Region info flags and capability ids. */
export const REGION_FLAG_READ = 1;
export const REGION_FLAG_WRITE = 2;
export const REGION_FLAG_MMAP = 4;
export const REGION_FLAG_CAPS = 8;
export const REGION_CAP_SPARSE_MMAP = 1;
export const REGION_CAP_TYPE = 2;
export const REGION_CAP_MSIX_MAPPABLE = 3;

/** PCI region indices. */
export const PciRegion = { BAR0: 0, BAR1: 1, BAR2: 2, BAR3: 3, BAR4: 4, BAR5: 5, ROM: 6, CONFIG: 7, VGA: 8 } as const;
export const PCI_NUM_REGIONS = 9;

/** IRQ info flags and PCI IRQ indices. */
export const IRQ_INFO_EVENTFD = 1;
export const IRQ_INFO_MASKABLE = 2;
export const IRQ_INFO_AUTOMASKED = 4;
export const IRQ_INFO_NORESIZE = 8;
export const PciIrq = { INTX: 0, MSI: 1, MSIX: 2, ERR: 3, REQ: 4 } as const;
export const PCI_NUM_IRQS = 5;

/** SET_IRQS flags. */
export const IRQ_SET_DATA_NONE = 1;
export const IRQ_SET_DATA_BOOL = 2;
export const IRQ_SET_DATA_EVENTFD = 4;
export const IRQ_SET_ACTION_MASK = 8;
export const IRQ_SET_ACTION_UNMASK = 16;
export const IRQ_SET_ACTION_TRIGGER = 32;
export const IRQ_SET_DATA_MASK = 7;
export const IRQ_SET_ACTION_MASK_ALL = 56;

/** DEVICE_FEATURE flags and feature numbers. */
export const FEATURE_MASK = 0xffff;
export const FEATURE_GET = 1 << 16;
export const FEATURE_SET = 1 << 17;
export const FEATURE_PROBE = 1 << 18;
export const Feature = {
  MIGRATION: 1,
  MIG_DEVICE_STATE: 2,
  DMA_LOGGING_START: 6,
  DMA_LOGGING_STOP: 7,
  DMA_LOGGING_REPORT: 8,
} as const;

/** Defaults of the VERSION capabilities when a side does not state them. */
export const DEFAULT_MAX_DATA_XFER = 1 << 20;
export const SPEC_DEFAULT_MAX_FDS = 1;
/** QEMU assumes 8 fds when our reply omits max_msg_fds; we always state it. */
export const OUR_MAX_MSG_FDS = 16;
/** Largest message we accept at all: max transfer plus the biggest fixed part. */
export const MAX_MESSAGE_SIZE = DEFAULT_MAX_DATA_XFER + 4096;

/** errno values used in error replies (Linux). */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ERANGE: 34,
  ENOSYS: 38,
  EPROTO: 71,
  EMSGSIZE: 90,
  ENOTSUP: 95,
  ECONNRESET: 104,
  ETIMEDOUT: 110,
} as const;
