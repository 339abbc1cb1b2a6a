// Arguments of management requests: checked once here, with the errors mdev users know.
import { MdevError } from '../mdev/errors.js';
import type { MdevAttr } from '../mdev/types.js';

/** A string argument; a missing optional one reads as ''. */
export function str(args: Record<string, unknown>, key: string, required = true): string {
  const v = args[key];
  if (v === undefined || v === null || v === '') {
    if (required) throw new MdevError('EINVAL', `missing argument "${key}"`);
    return '';
  }
  if (typeof v !== 'string') throw new MdevError('EINVAL', `argument "${key}" must be a string`);
  return v;
}

export function attrsArg(args: Record<string, unknown>): MdevAttr[] {
  const a = args.attrs ?? [];
  if (!Array.isArray(a) || !a.every((x) => x && typeof x === 'object' && Object.values(x).every((v) => typeof v === 'string'))) {
    throw new MdevError('EINVAL', 'attrs must be an array of {"name": "value"} objects');
  }
  return a as MdevAttr[];
}
