import { randomUUID } from 'node:crypto';
import { MdevError } from './errors.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Validates a UUID the way mdev's `create` does and returns its canonical lowercase form. */
export function parseUuid(text: string): string {
  const u = text.trim().toLowerCase();
  if (!UUID.test(u)) throw new MdevError('EINVAL', `"${text}" is not a UUID`);
  return u;
}

export function newUuid(): string {
  return randomUUID();
}
