/**
 * A small proto3 codec driven by a schema table (control-messages.ts), so the node agent speaks the
 * control-plane wire without protobufjs. It covers what Ambit's protos use: string, bool, uint32,
 * int32, enums, nested messages, repeated fields (scalars packed, and accepted unpacked too), maps
 * and oneofs. Decoded objects have the shape @grpc/proto-loader gives with keepCase, defaults,
 * arrays, objects, oneofs and enums as String (what the controller's grpc-js side uses): absent
 * scalars are their default, absent messages null, enums their name (an unknown number stays a
 * number), and a oneof names its set member in a virtual field.
 * Decoding skips unknown fields and rejects malformed input with an AmbitError (PB_MALFORMED)
 * naming the field; encoding rejects values that do not fit the schema (PB_ENCODE).
 */
import { AmbitError } from '../../shared/errors.ts';

export type ScalarType = 'string' | 'bool' | 'uint32' | 'int32';

export interface EnumType {
  readonly kind: 'enum';
  readonly name: string;
  readonly names: ReadonlyMap<number, string>;
  readonly numbers: ReadonlyMap<string, number>;
}

export interface FieldDef {
  readonly name: string;
  readonly no: number;
  /** For a map: the value type. */
  readonly type: ScalarType | EnumType | MessageType;
  readonly repeated?: boolean;
  readonly mapKey?: 'string' | 'uint32';
  readonly oneof?: string;
}

export interface MessageType {
  readonly kind: 'message';
  readonly name: string;
  readonly fields: readonly FieldDef[];
  readonly byNo: ReadonlyMap<number, FieldDef>;
}

export type PbObject = Record<string, unknown>;

export function enumType(name: string, values: Record<string, number>): EnumType {
  const names = new Map<number, string>();
  for (const [n, v] of Object.entries(values)) if (!names.has(v)) names.set(v, n);
  return { kind: 'enum', name, names, numbers: new Map(Object.entries(values)) };
}

export function messageType(name: string, fields: FieldDef[]): MessageType {
  const byNo = new Map<number, FieldDef>();
  for (const f of fields) {
    if (byNo.has(f.no)) throw new Error(`schema ${name}: field number ${f.no} used twice`);
    byNo.set(f.no, f);
  }
  return { kind: 'message', name, fields, byNo };
}

// wire types
const VARINT = 0;
const I64 = 1;
const LEN = 2;
const SGROUP = 3;
const EGROUP = 4;
const I32 = 5;

/** How a value of type `t` travels (a map entry is always LEN). */
function wireType(t: FieldDef['type']): number {
  return t === 'string' || (typeof t === 'object' && t.kind === 'message') ? LEN : VARINT;
}

// ---------------------------------------------------------------- decoding

class Reader {
  readonly buf: Buffer;
  pos = 0;
  constructor(buf: Buffer) {
    this.buf = buf;
  }

  fail(path: string, what: string): never {
    throw new AmbitError('PB_MALFORMED', `malformed protobuf ${path}: ${what} (at byte ${this.pos} of ${this.buf.length})`);
  }

  /** A varint's low 32 bits, unsigned (int32 values arrive sign-extended to 64 bits). */
  varint(end: number, path: string): number {
    let v = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= end) this.fail(path, 'truncated varint');
      const b = this.buf[this.pos++];
      if (i < 5) v |= (b & 0x7f) << (7 * i);
      if (b < 0x80) return v >>> 0;
    }
    return this.fail(path, 'varint longer than 10 bytes');
  }

  /** Reads a length prefix; returns where the payload ends (the reader stays at its start). */
  span(end: number, path: string): number {
    const len = this.varint(end, path);
    if (len > end - this.pos) this.fail(path, `length ${len} runs past the end (${end - this.pos} bytes left)`);
    return this.pos + len;
  }

  skip(wt: number, fieldNo: number, end: number, path: string, depth: number): void {
    const need = (n: number) => {
      if (end - this.pos < n) this.fail(path, `truncated field ${fieldNo}`);
      this.pos += n;
    };
    switch (wt) {
      case VARINT: this.varint(end, path); return;
      case I64: need(8); return;
      case LEN: this.pos = this.span(end, path); return;
      case I32: need(4); return;
      case SGROUP: {
        if (depth > 32) this.fail(path, 'groups nested too deep');
        for (;;) {
          const tag = this.varint(end, path);
          if ((tag & 7) === EGROUP) {
            if (tag >>> 3 !== fieldNo) this.fail(path, `group ${fieldNo} closed by field ${tag >>> 3}`);
            return;
          }
          this.skip(tag & 7, tag >>> 3, end, path, depth + 1);
        }
      }
      default: this.fail(path, `field ${fieldNo} has invalid wire type ${wt}`);
    }
  }
}

/** Decodes `buf` as `type`; throws AmbitError PB_MALFORMED. */
export function decodeMessage(type: MessageType, buf: Uint8Array): PbObject {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const r = new Reader(b);
  return readMessage(r, type, b.length, type.name);
}

function defaults(type: MessageType): PbObject {
  const o: PbObject = {};
  for (const f of type.fields) {
    if (f.oneof !== undefined) continue;
    if (f.mapKey !== undefined) o[f.name] = {};
    else if (f.repeated) o[f.name] = [];
    else o[f.name] = defaultOf(f.type);
  }
  return o;
}

function defaultOf(t: FieldDef['type']): unknown {
  switch (t) {
    case 'string': return '';
    case 'bool': return false;
    case 'uint32':
    case 'int32': return 0;
  }
  if (t.kind === 'enum') return t.names.get(0) ?? 0;
  return null;
}

function readMessage(r: Reader, type: MessageType, end: number, path: string): PbObject {
  const o = defaults(type);
  while (r.pos < end) {
    const tag = r.varint(end, path);
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 0) r.fail(path, 'field number 0');
    const f = type.byNo.get(no);
    if (!f) {
      if (wt === EGROUP) r.fail(path, `unexpected end of group ${no}`);
      r.skip(wt, no, end, path, 0);
      continue;
    }
    const fpath = `${path}.${f.name}`;
    if (f.mapKey !== undefined) {
      if (wt !== LEN) r.fail(fpath, `wire type ${wt}, expected ${LEN}`);
      readMapEntry(r, f, o[f.name] as PbObject, end, fpath);
      continue;
    }
    if (f.repeated) {
      const list = o[f.name] as unknown[];
      const expected = wireType(f.type);
      if (wt === LEN && expected === VARINT) {
        const stop = r.span(end, fpath);
        while (r.pos < stop) list.push(readValue(r, f.type, stop, fpath));
      } else {
        if (wt !== expected) r.fail(fpath, `wire type ${wt}, expected ${expected}`);
        list.push(readValue(r, f.type, end, fpath));
      }
      continue;
    }
    const expected = wireType(f.type);
    if (wt !== expected) r.fail(fpath, `wire type ${wt}, expected ${expected}`);
    o[f.name] = readValue(r, f.type, end, fpath); // a repeated singular field: the last one wins
    if (f.oneof !== undefined) {
      for (const other of type.fields) if (other.oneof === f.oneof && other !== f) delete o[other.name];
      o[f.oneof] = f.name;
    }
  }
  return o;
}

function readValue(r: Reader, t: FieldDef['type'], end: number, path: string): unknown {
  switch (t) {
    case 'string': {
      const stop = r.span(end, path);
      const s = r.buf.toString('utf8', r.pos, stop);
      r.pos = stop;
      return s;
    }
    case 'bool': return r.varint(end, path) !== 0;
    case 'uint32': return r.varint(end, path);
    case 'int32': return r.varint(end, path) | 0;
  }
  if (t.kind === 'enum') {
    const n = r.varint(end, path) | 0;
    return t.names.get(n) ?? n;
  }
  return readMessage(r, t, r.span(end, path), path);
}

function readMapEntry(r: Reader, f: FieldDef, into: PbObject, end: number, path: string): void {
  const stop = r.span(end, path);
  let key: string | undefined;
  let value: unknown;
  while (r.pos < stop) {
    const tag = r.varint(stop, path);
    const no = tag >>> 3;
    const wt = tag & 7;
    if (no === 1) {
      const expected = wireType(f.mapKey!);
      if (wt !== expected) r.fail(`${path} key`, `wire type ${wt}, expected ${expected}`);
      key = String(readValue(r, f.mapKey!, stop, `${path} key`));
    } else if (no === 2) {
      const expected = wireType(f.type);
      if (wt !== expected) r.fail(`${path} value`, `wire type ${wt}, expected ${expected}`);
      value = readValue(r, f.type, stop, `${path}[${key ?? ''}]`);
    } else {
      if (no === 0) r.fail(path, 'field number 0 in a map entry');
      r.skip(wt, no, stop, path, 0);
    }
  }
  const k = key ?? (f.mapKey === 'string' ? '' : '0');
  const v = value === undefined
    ? (typeof f.type === 'object' && f.type.kind === 'message' ? defaults(f.type) : defaultOf(f.type))
    : value;
  // '__proto__' as a plain assignment would change the object's prototype
  if (k === '__proto__') Object.defineProperty(into, k, { value: v, enumerable: true, writable: true, configurable: true });
  else into[k] = v;
}

// ---------------------------------------------------------------- encoding

class Writer {
  buf = Buffer.allocUnsafe(256);
  pos = 0;

  #ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  /** An unsigned 32-bit value, or a negative int32 sign-extended to 64 bits (10 bytes). */
  varint(v: number): void {
    this.#ensure(10);
    let lo = v >>> 0;
    let hi = v < 0 ? 0xffffffff : 0;
    while (hi !== 0) {
      this.buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    while (lo > 0x7f) {
      this.buf[this.pos++] = (lo & 0x7f) | 0x80;
      lo >>>= 7;
    }
    this.buf[this.pos++] = lo;
  }

  tag(no: number, wt: number): void {
    this.varint(((no << 3) | wt) >>> 0);
  }

  bytes(b: Buffer): void {
    this.varint(b.length);
    this.#ensure(b.length);
    b.copy(this.buf, this.pos);
    this.pos += b.length;
  }

  string(s: string): void {
    const n = Buffer.byteLength(s, 'utf8');
    this.varint(n);
    this.#ensure(n);
    this.pos += this.buf.write(s, this.pos, n, 'utf8');
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

function bad(path: string, what: string): never {
  throw new AmbitError('PB_ENCODE', `cannot encode ${path}: ${what}`);
}

/** Encodes `obj` (proto-loader's object shape; enums as names or numbers) as `type`. */
export function encodeMessage(type: MessageType, obj: PbObject): Buffer {
  const w = new Writer();
  writeMessage(w, type, obj, type.name);
  return w.finish();
}

function writeMessage(w: Writer, type: MessageType, obj: PbObject, path: string): void {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) bad(path, `expected an object, got ${describe(obj)}`);
  const oneofSet = new Map<string, string>();
  for (const f of type.fields) {
    const v = obj[f.name];
    if (v === undefined || v === null) continue;
    const fpath = `${path}.${f.name}`;
    if (f.mapKey !== undefined) {
      if (typeof v !== 'object' || Array.isArray(v)) bad(fpath, `expected an object (map), got ${describe(v)}`);
      for (const [k, val] of Object.entries(v as PbObject)) {
        const e = new Writer();
        e.tag(1, f.mapKey === 'string' ? LEN : VARINT);
        if (f.mapKey === 'string') e.string(k);
        else e.varint(checkInt(`${fpath} key`, /^[0-9]+$/.test(k) ? Number(k) : NaN, 'uint32'));
        writeField(e, f, 2, val ?? (typeof f.type === 'object' && f.type.kind === 'message' ? {} : defaultOf(f.type)), `${fpath}[${k}]`, true);
        w.tag(f.no, LEN);
        w.bytes(e.finish());
      }
      continue;
    }
    if (f.repeated) {
      if (!Array.isArray(v)) bad(fpath, `expected an array, got ${describe(v)}`);
      if (v.length === 0) continue;
      if (wireType(f.type) === VARINT) {
        const p = new Writer();
        v.forEach((x, i) => writeScalar(p, f.type, x, `${fpath}[${i}]`));
        w.tag(f.no, LEN);
        w.bytes(p.finish());
      } else {
        v.forEach((x, i) => writeField(w, f, f.no, x, `${fpath}[${i}]`, true));
      }
      continue;
    }
    if (f.oneof !== undefined) {
      const other = oneofSet.get(f.oneof);
      if (other !== undefined) bad(path, `${other} and ${f.name} of oneof ${f.oneof} are both set`);
      oneofSet.set(f.oneof, f.name);
    }
    // proto3: default values are not sent, except a oneof member (its presence is the information)
    writeField(w, f, f.no, v, fpath, f.oneof !== undefined);
  }
}

function writeField(w: Writer, f: FieldDef, no: number, v: unknown, path: string, always: boolean): void {
  const t = f.type;
  if (typeof t === 'object' && t.kind === 'message') {
    const sub = new Writer();
    writeMessage(sub, t, v as PbObject, path);
    w.tag(no, LEN);
    w.bytes(sub.finish());
    return;
  }
  if (t === 'string') {
    if (typeof v !== 'string') bad(path, `expected a string, got ${describe(v)}`);
    if (v === '' && !always) return;
    w.tag(no, LEN);
    w.string(v);
    return;
  }
  if (!always && isDefault(t, v)) {
    writeScalar(new Writer(), t, v, path); // still checked
    return;
  }
  w.tag(no, VARINT);
  writeScalar(w, t, v, path);
}

function isDefault(t: ScalarType | EnumType, v: unknown): boolean {
  if (t === 'bool') return v === false;
  if (typeof t === 'object') return v === 0 || (typeof v === 'string' && t.numbers.get(v) === 0);
  return v === 0;
}

function writeScalar(w: Writer, t: FieldDef['type'], v: unknown, path: string): void {
  switch (t) {
    case 'bool':
      if (typeof v !== 'boolean') bad(path, `expected a boolean, got ${describe(v)}`);
      w.varint(v ? 1 : 0);
      return;
    case 'uint32':
    case 'int32':
      w.varint(checkInt(path, v, t));
      return;
    case 'string':
      bad(path, 'a string cannot be packed');
  }
  if (t.kind !== 'enum') bad(path, `message ${t.name} cannot be packed`);
  if (typeof v === 'string') {
    const n = t.numbers.get(v);
    if (n === undefined) bad(path, `${JSON.stringify(v)} is not a value of enum ${t.name}`);
    w.varint(n);
    return;
  }
  w.varint(checkInt(path, v, 'int32'));
}

function checkInt(path: string, v: unknown, t: 'uint32' | 'int32'): number {
  const ok = typeof v === 'number' && Number.isInteger(v) && (t === 'uint32' ? v >= 0 && v <= 0xffffffff : v >= -0x80000000 && v <= 0x7fffffff);
  if (!ok) bad(path, `${describe(v)} is not a ${t}`);
  return v as number;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}...` : v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}
