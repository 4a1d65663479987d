/**
 * The CNI plugin -> node agent hand-off: one JSON request per SOCK_SEQPACKET message (the pod's
 * netns fd travels with an `add` via SCM_RIGHTS), one JSON reply. Both ends validate with the
 * functions below, so a field missing on one side is reported with the same words on the other.
 */
import { AmbitError } from '../shared/errors.ts';

export interface PodHandoffAdd {
  op: 'add';
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string;
  ips: string[];
  netnsPath: string;
  /**
   * Whether the pod is in the mesh when it starts (the CNI plugin then installed the in-pod rules).
   * Every pod of the node is handed over so the agent can enroll or release it at run time when
   * labels change; absent (older plugins, older records) means true.
   */
  enrolled?: boolean;
}
export interface PodHandoffDel { op: 'del'; uid: string; name?: string; namespace?: string }
export type PodHandoffRequest = PodHandoffAdd | PodHandoffDel;
export type PodHandoffReply = { ok: true } | { ok: false; code: string; message: string };

export const HANDOFF_BAD_REQUEST = 'HANDOFF_BAD_REQUEST';
export const HANDOFF_BAD_REPLY = 'HANDOFF_BAD_REPLY';
/** Upper bound for one message; a pod description is far smaller. */
export const HANDOFF_MAX_MESSAGE = 64 * 1024;

function bad(message: string): AmbitError {
  return new AmbitError(HANDOFF_BAD_REQUEST, `pod hand-off request rejected: ${message}`);
}

function parseJsonObject(data: Buffer | string, what: string, err: (m: string) => AmbitError): Record<string, unknown> {
  const text = typeof data === 'string' ? data : data.toString('utf8');
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw err(`${what} is not valid JSON (${(e as Error).message})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw err(`${what} must be a JSON object`);
  return value as Record<string, unknown>;
}

function str(o: Record<string, unknown>, field: string, required: boolean): string | undefined {
  const v = o[field];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string' || v === '') throw bad(`field "${field}" must be a non-empty string (got ${JSON.stringify(v) ?? 'nothing'})`);
  return v;
}

/** Parses and validates a request; throws AmbitError HANDOFF_BAD_REQUEST naming the field. */
export function parsePodHandoffRequest(data: Buffer | string): PodHandoffRequest {
  const o = parseJsonObject(data, 'request', bad);
  if (o.op !== 'add' && o.op !== 'del') throw bad(`field "op" must be "add" or "del" (got ${JSON.stringify(o.op) ?? 'nothing'})`);
  const uid = str(o, 'uid', true)!;
  if (o.op === 'del') {
    const del: PodHandoffDel = { op: 'del', uid };
    const name = str(o, 'name', false);
    const namespace = str(o, 'namespace', false);
    if (name !== undefined) del.name = name;
    if (namespace !== undefined) del.namespace = namespace;
    return del;
  }
  const name = str(o, 'name', true)!;
  const namespace = str(o, 'namespace', true)!;
  const serviceAccount = str(o, 'serviceAccount', true)!;
  const netnsPath = str(o, 'netnsPath', true)!;
  if (!Array.isArray(o.ips) || o.ips.some((ip) => typeof ip !== 'string' || ip === '')) {
    throw bad(`field "ips" must be an array of IP address strings (got ${JSON.stringify(o.ips) ?? 'nothing'})`);
  }
  if (o.enrolled !== undefined && typeof o.enrolled !== 'boolean') {
    throw bad(`field "enrolled" must be true or false when present (got ${JSON.stringify(o.enrolled)})`);
  }
  const add: PodHandoffAdd = { op: 'add', uid, name, namespace, serviceAccount, ips: [...(o.ips as string[])], netnsPath };
  if (o.enrolled !== undefined) add.enrolled = o.enrolled;
  return add;
}

/** Parses a reply (CNI side); throws AmbitError HANDOFF_BAD_REPLY when it is not one. */
export function parsePodHandoffReply(data: Buffer | string): PodHandoffReply {
  const err = (m: string) => new AmbitError(HANDOFF_BAD_REPLY, `the node agent sent an unreadable hand-off reply: ${m}`);
  const o = parseJsonObject(data, 'reply', err);
  if (o.ok === true) return { ok: true };
  if (o.ok !== false) throw err('field "ok" must be true or false');
  if (typeof o.code !== 'string' || typeof o.message !== 'string') throw err('a refusal needs string fields "code" and "message"');
  return { ok: false, code: o.code, message: o.message };
}

export function encodeHandoff(msg: PodHandoffRequest | PodHandoffReply): Buffer {
  return Buffer.from(JSON.stringify(msg), 'utf8');
}
