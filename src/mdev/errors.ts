// Errors users know from the mdev sysfs ABI and mdevctl, carried with a clear message.
export type MdevErrorCode = 'EEXIST' | 'EINVAL' | 'ENOSPC' | 'EUSERS' | 'ENODEV' | 'ENOENT' | 'EBUSY' | 'EAGAIN' | 'EIO' | 'EPERM';

const ERRNO: Record<MdevErrorCode, number> = {
  EPERM: 1,
  ENOENT: 2,
  EIO: 5,
  EAGAIN: 11,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  EUSERS: 87,
};

export class MdevError extends Error {
  readonly errno: number;
  constructor(
    readonly code: MdevErrorCode,
    message: string,
  ) {
    super(message);
    this.errno = ERRNO[code];
  }
}
