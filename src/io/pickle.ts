// A restricted unpickler for the pickles torch.save writes for state dicts, in the spirit of
// torch.load(weights_only=True): it builds only plain data (None, bools, ints, floats, strings,
// bytes, tuples, lists, dicts) and calls only the globals the caller whitelists. Any other
// opcode (INST, OBJ, NEWOBJ, EXT*, ...) or global (os.system, builtins.eval, ...) is an error
// naming it, so a malicious file can never run code here.

/** A whitelisted global: a value (e.g. a storage type) and, when callable, what REDUCE does. */
export class PyGlobal {
  constructor(readonly qualname: string, readonly call?: (args: unknown[]) => unknown) {}
}

/** A Python dict (insertion ordered; keys are strings or numbers here). */
export class PyDict {
  readonly map = new Map<unknown, unknown>();
  /** State set by BUILD (an OrderedDict's __dict__, e.g. state_dict()._metadata); unused. */
  state: unknown = undefined;
}

export interface UnpickleOptions {
  /** "module.name" -> global; anything missing is refused. */
  globals: Record<string, PyGlobal>;
  /** BINPERSID: turns a persistent id into a value (torch: storages). */
  persistentLoad?: (pid: unknown) => unknown;
}

const MARK = Symbol('mark');

// Names of opcodes we refuse, for the error message.
const OPCODE_NAMES: Record<number, string> = {
  0x69: 'INST', 0x6f: 'OBJ', 0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x50: 'PERSID', 0x49: 'INT', 0x4c: 'LONG', 0x53: 'STRING', 0x56: 'UNICODE', 0x46: 'FLOAT', 0x67: 'GET', 0x70: 'PUT',
  0x54: 'BINSTRING', 0x55: 'SHORT_BINSTRING', 0x8b: 'LONG4', 0x8f: 'EMPTY_SET', 0x90: 'ADDITEMS', 0x91: 'FROZENSET',
  0x8e: 'BINBYTES8', 0x96: 'BYTEARRAY8', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

export class UnpicklingError extends Error {}

export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let p = 0;
  const fail = (msg: string): never => { throw new UnpicklingError(`pickle: ${msg}`); };
  const need = (n: number) => { if (p + n > buf.length) fail(`truncated at byte ${p}`); };
  const u8 = () => { need(1); return buf[p++]; };
  const u16 = () => { need(2); const v = buf.readUInt16LE(p); p += 2; return v; };
  const u32 = () => { need(4); const v = buf.readUInt32LE(p); p += 4; return v; };
  const i32 = () => { need(4); const v = buf.readInt32LE(p); p += 4; return v; };
  const u64 = () => { need(8); const v = buf.readBigUInt64LE(p); p += 8; if (v > BigInt(buf.length)) fail(`length ${v} beyond the data`); return Number(v); };
  const str = (n: number) => { need(n); const s = buf.toString('utf8', p, p + n); p += n; return s; };
  const line = () => { const e = buf.indexOf(0x0a, p); if (e < 0) fail('unterminated GLOBAL'); const s = buf.toString('utf8', p, e); p = e + 1; return s; };
  const pop = () => { if (!stack.length || stack[stack.length - 1] === MARK) fail(`stack underflow at byte ${p}`); return stack.pop(); };
  const top = () => { if (!stack.length) fail(`stack underflow at byte ${p}`); return stack[stack.length - 1]; };
  const popMark = (): unknown[] => {
    const m = marks.pop();
    if (m === undefined) fail(`MARK missing at byte ${p}`);
    const items = stack.splice(m!);
    items.shift(); // the MARK itself
    return items;
  };
  const find = (module: string, name: string): PyGlobal => {
    const q = `${module}.${name}`;
    const g = Object.hasOwn(opts.globals, q) ? opts.globals[q] : undefined;
    if (!g) fail(`global '${q}' is not allowed (only plain tensors and containers are loaded, as torch.load(weights_only=True) does)`);
    return g!;
  };
  const setItems = (d: unknown, kv: unknown[]) => {
    if (!(d instanceof PyDict)) fail('SETITEM(S) on something that is not a dict');
    if (kv.length % 2) fail('SETITEMS with an odd number of items');
    for (let i = 0; i < kv.length; i += 2) {
      const k = kv[i];
      if (typeof k !== 'string' && typeof k !== 'number') fail('dict key is not a string or number');
      (d as PyDict).map.set(k, kv[i + 1]);
    }
  };
  const memoPut = (i: number) => memo.set(i, top());
  const memoGet = (i: number) => { if (!memo.has(i)) fail(`memo key ${i} was never stored`); stack.push(memo.get(i)); };

  for (;;) {
    const at = p;
    const op = u8();
    switch (op) {
      case 0x80: { const v = u8(); if (v > 5) fail(`unsupported protocol ${v}`); break; } // PROTO
      case 0x95: need(8); p += 8; break; // FRAME: framing hint only
      case 0x2e: { // STOP
        if (stack.length !== 1) fail(`STOP with ${stack.length} values on the stack`);
        return stack[0];
      }
      case 0x28: marks.push(stack.length); stack.push(MARK); break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4a: stack.push(i32()); break; // BININT
      case 0x4b: stack.push(u8()); break; // BININT1
      case 0x4d: stack.push(u16()); break; // BININT2
      case 0x8a: { // LONG1: little-endian two's complement
        const n = u8(); need(n);
        let v = 0n;
        for (let i = n - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[p + i]);
        if (n && buf[p + n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        p += n;
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) fail(`integer ${v} is too large`);
        stack.push(Number(v));
        break;
      }
      case 0x47: { need(8); stack.push(buf.readDoubleBE(p)); p += 8; break; } // BINFLOAT
      case 0x58: stack.push(str(u32())); break; // BINUNICODE
      case 0x8c: stack.push(str(u8())); break; // SHORT_BINUNICODE
      case 0x8d: stack.push(str(u64())); break; // BINUNICODE8
      case 0x43: { const n = u8(); need(n); stack.push(Uint8Array.from(buf.subarray(p, p + n))); p += n; break; } // SHORT_BINBYTES
      case 0x42: { const n = u32(); need(n); stack.push(Uint8Array.from(buf.subarray(p, p + n))); p += n; break; } // BINBYTES
      case 0x29: stack.push(Object.freeze([])); break; // EMPTY_TUPLE
      case 0x74: stack.push(Object.freeze(popMark())); break; // TUPLE
      case 0x85: stack.push(Object.freeze([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(), a = pop(); stack.push(Object.freeze([a, b])); break; } // TUPLE2
      case 0x87: { const c = pop(), b = pop(), a = pop(); stack.push(Object.freeze([a, b, c])); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: stack.push(popMark()); break; // LIST
      case 0x61: { const v = pop(); const l = top(); if (!Array.isArray(l) || Object.isFrozen(l)) fail('APPEND to something that is not a list'); (l as unknown[]).push(v); break; }
      case 0x65: { const items = popMark(); const l = top(); if (!Array.isArray(l) || Object.isFrozen(l)) fail('APPENDS to something that is not a list'); (l as unknown[]).push(...items); break; }
      case 0x7d: stack.push(new PyDict()); break; // EMPTY_DICT
      case 0x64: { const d = new PyDict(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(), k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const kv = popMark(); setItems(top(), kv); break; } // SETITEMS
      case 0x63: { const module = line(), name = line(); stack.push(find(module, name)); break; } // GLOBAL
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof name !== 'string' || typeof module !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(find(module as string, name as string));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), fn = pop();
        if (!(fn instanceof PyGlobal) || !fn.call) fail(`REDUCE on ${fn instanceof PyGlobal ? `'${fn.qualname}', which is not callable here` : 'a value that is not a whitelisted callable'}`);
        if (!Array.isArray(args)) fail(`REDUCE arguments of '${(fn as PyGlobal).qualname}' are not a tuple`);
        stack.push((fn as PyGlobal).call!(args as unknown[]));
        break;
      }
      case 0x62: { // BUILD: only dicts take state (OrderedDict._metadata); nothing else is built
        const state = pop(); const obj = top();
        if (!(obj instanceof PyDict)) fail('BUILD on an object that is not a dict');
        (obj as PyDict).state = state;
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!opts.persistentLoad) fail('BINPERSID without a persistent loader');
        stack.push(opts.persistentLoad!(pid));
        break;
      }
      case 0x71: memoPut(u8()); break; // BINPUT
      case 0x72: memoPut(u32()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: memoGet(u8()); break; // BINGET
      case 0x6a: memoGet(u32()); break; // LONG_BINGET
      default: {
        const name = OPCODE_NAMES[op] ?? (op >= 0x20 && op < 0x7f ? `'${String.fromCharCode(op)}'` : 'unknown');
        fail(`opcode ${name} (0x${op.toString(16).padStart(2, '0')}) at byte ${at} is not allowed`);
      }
    }
  }
}
