// Guest addresses get their own type so an I/O virtual address is never
// confused with an offset into a region or a host buffer.
declare const iovaBrand: unique symbol;
export type Iova = number & { readonly [iovaBrand]: true };

export const PAGE_SIZE = 4096;

export function iova(n: number): Iova {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`invalid guest address ${n}`);
  return n as Iova;
}

export function pageAligned(n: number): boolean {
  return n % PAGE_SIZE === 0;
}
