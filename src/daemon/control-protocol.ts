// The management protocol between the CLI (or any local consumer) and the
// daemon. It reuses the vfio-user framing (16-byte header, fds attached to a
// message) so the same transport carries JSON requests, replies, events and,
// where a reply exports a buffer, file descriptors.

import { writeHeader } from '../vfio-user/codec.js';
import { HEADER_SIZE } from '../vfio-user/constants.js';

/** Header `cmd` value of every control message ("MD"). */
export const CONTROL_CMD = 0x444d;
export const KIND_REQUEST = 0;
export const KIND_REPLY = 1;
export const KIND_EVENT = 2;
export const KIND_ERROR = 0x21;

/** Control payloads are small JSON documents; a bound keeps a client from exhausting memory. */
export const MAX_CONTROL_MESSAGE = 1024 * 1024;

export interface ControlRequest {
  op: string;
  args?: Record<string, unknown>;
}

export interface ControlErrorBody {
  code: string;
  errno: number;
  message: string;
}

export function encodeControl(id: number, kind: number, body: unknown): Uint8Array {
  const json = Buffer.from(JSON.stringify(body));
  const msg = new Uint8Array(HEADER_SIZE + json.length);
  writeHeader(new DataView(msg.buffer), 0, id, CONTROL_CMD, msg.length, kind, kind === KIND_ERROR ? ((body as ControlErrorBody).errno ?? 0) : 0);
  msg.set(json, HEADER_SIZE);
  return msg;
}

export function decodeControl(payload: Uint8Array): unknown {
  return JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
}
