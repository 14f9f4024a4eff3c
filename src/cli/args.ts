// Command-line options from one declared schema per command. argv (and a --config JSON file)
// are parsed once, at the edge, into a typed options object that the command passes down:
// nothing below re-reads flags by name. Node's util.parseArgs does the tokenizing (strict: a
// value-taking flag with no value is an error, never `true`); this file adds what it lacks:
// long aliases (--lr for --learning-rate), --no-<flag>, an optional value (--resume [DIR]),
// typed values checked against ranges and choices before anything is loaded, clear messages
// ("did you mean --max-steps"), --config keys in TrainingArguments' snake_case, and --help.
import { parseArgs as nodeParseArgs } from 'node:util';
import { readJsonFile } from '../io/files.js';

export class UsageError extends Error {}

export type Kind = 'string' | 'int' | 'number' | 'boolean' | 'list' | 'enum' | 'strings' | 'targets';

/** One flag. The key in the schema is its kebab-case name (the TrainingArguments / LoraConfig field). */
export interface OptionSpec {
  kind: Kind;
  help: string;
  /** Other long names kept working (today's short ones: --lr, --epochs, --batch-size). */
  alias?: readonly string[];
  metavar?: string;
  default?: unknown;
  /** What --help shows as the default when it is computed (e.g. "128, 256 for causal-lm"). */
  defaultText?: string;
  /** Numbers: inclusive bounds, or exclusive with gt / lt. */
  min?: number; max?: number; gt?: number; lt?: number;
  choices?: readonly string[];
  /** The flag may stand alone (--resume) or take a value (--resume DIR); alone it is `true`. */
  optionalValue?: boolean;
  required?: boolean;
  group?: string;
}

export type Schema = Record<string, OptionSpec>;

export interface CommandDef<S extends Schema = Schema> {
  name: string;
  summary: string;
  usage?: string;
  options: S;
  /** Text after the flag list in --help. */
  epilog?: string;
}

type Camel<S extends string> = S extends `${infer H}-${infer T}` ? `${H}${Capitalize<Camel<T>>}` : S;
type ValueOf<O> =
  O extends { kind: 'int' | 'number' } ? number :
  O extends { kind: 'boolean' } ? boolean :
  O extends { kind: 'list' | 'strings' } ? string[] :
  O extends { kind: 'targets' } ? string | string[] :
  O extends { kind: 'enum'; choices: readonly (infer C)[] } ? C :
  O extends { optionalValue: true } ? string | true :
  string;
type Present<O> = O extends { kind: 'boolean' } ? true : O extends { default: unknown } ? true : O extends { required: true } ? true : false;

/** The typed options object of a schema: camelCase keys, undefined where not given and no default. */
export type Options<S extends Schema> = {
  [K in keyof S as Camel<K & string>]: Present<S[K]> extends true ? ValueOf<S[K]> : ValueOf<S[K]> | undefined
} & { help: boolean; /** camelCase names given on the command line or in --config (not defaults). */ given: Set<string> };

// Builders: a flag is one line of schema.
type Extra = Omit<Partial<OptionSpec>, 'kind' | 'help' | 'choices'>;
export const str = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'string' as const, help, ...(x as X) });
export const int = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'int' as const, help, ...(x as X) });
export const num = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'number' as const, help, ...(x as X) });
export const flag = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'boolean' as const, help, ...(x as X) });
export const list = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'list' as const, help, ...(x as X) });
export const strings = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'strings' as const, help, ...(x as X) });
/** peft's target_modules: names a,b / a regex / all-linear on the command line, or a JSON list. */
export const targets = <const X extends Extra = {}>(help: string, x?: X) => ({ kind: 'targets' as const, help, ...(x as X) });
export const oneOf = <const C extends readonly string[], const X extends Extra = {}>(choices: C, help: string, x?: X) =>
  ({ kind: 'enum' as const, choices, help, ...(x as X) });

export const camel = (s: string): string => s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
export const kebab = (s: string): string => s.replace(/_/g, '-').replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();

const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)(e[+-]?\d+)?$/i;

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
  }
  return d[a.length][b.length];
}

interface Names { byName: Map<string, string>; all: string[] }

function namesOf(schema: Schema): Names {
  const byName = new Map<string, string>();
  for (const [k, s] of Object.entries(schema)) {
    byName.set(k, k);
    for (const a of s.alias ?? []) byName.set(a, k);
  }
  byName.set('help', 'help');
  return { byName, all: [...byName.keys()] };
}

function suggest(bad: string, names: Names): string {
  const k = kebab(bad);
  if (k !== bad && names.byName.has(k)) return ` (did you mean --${k}?)`;
  let best = '', bd = Infinity;
  for (const n of names.all) { const d = editDistance(k, n); if (d < bd) { bd = d; best = n; } }
  return bd <= Math.max(2, Math.floor(k.length / 4)) ? ` (did you mean --${best}?)` : '';
}

function unknownOption(cmd: string, name: string, names: Names): UsageError {
  return new UsageError(`unknown option --${name}${suggest(name, names)} (see peft-ts ${cmd} --help)`);
}

/** A raw value (a string from argv, any JSON value from --config) checked and converted to the flag's kind. */
function convert(spec: OptionSpec, v: unknown, where: string): unknown {
  const got = typeof v === 'string' ? `'${v}'` : JSON.stringify(v);
  switch (spec.kind) {
    case 'boolean':
      if (typeof v !== 'boolean') throw new UsageError(`${where} is a switch (true or false), got ${got}`);
      return v;
    case 'int': case 'number': {
      let n: number;
      if (typeof v === 'number') n = v;
      else if (typeof v === 'string' && NUMBER.test(v.trim())) n = Number(v);
      else throw new UsageError(`${where} expects a${spec.kind === 'int' ? 'n integer' : ' number'}, got ${got}`);
      if (!Number.isFinite(n)) throw new UsageError(`${where} expects a finite number, got ${got}`);
      if (spec.kind === 'int' && !Number.isSafeInteger(n)) throw new UsageError(`${where} expects an integer, got ${got}`);
      const range = [
        spec.min !== undefined && n < spec.min ? `>= ${spec.min}` : '', spec.max !== undefined && n > spec.max ? `<= ${spec.max}` : '',
        spec.gt !== undefined && !(n > spec.gt) ? `> ${spec.gt}` : '', spec.lt !== undefined && !(n < spec.lt) ? `< ${spec.lt}` : '',
      ].filter(Boolean);
      if (range.length) throw new UsageError(`${where} must be ${rangeText(spec)}, got ${n}`);
      return n;
    }
    case 'enum':
      if (typeof v !== 'string' || !spec.choices!.includes(v)) throw new UsageError(`${where} must be ${choiceText(spec.choices!)}, got ${got}`);
      return v;
    case 'list': {
      const items = typeof v === 'string' ? v.split(',').map((s) => s.trim()).filter(Boolean) : v;
      if (!Array.isArray(items) || !items.every((s) => typeof s === 'string')) throw new UsageError(`${where} expects a list of names (a,b,c or a JSON array of strings), got ${got}`);
      return [...items];
    }
    case 'targets':
      if (typeof v === 'string' && v.trim()) return v;
      if (Array.isArray(v) && v.length && v.every((s) => typeof s === 'string' && s)) return [...v];
      throw new UsageError(`${where} expects a list of names or a regex string, got ${got}`);
    case 'strings': {
      const items = typeof v === 'string' ? [v] : v;
      if (!Array.isArray(items) || !items.every((s) => typeof s === 'string')) throw new UsageError(`${where} expects text (or a JSON array of strings), got ${got}`);
      return [...items];
    }
    default:
      if (spec.optionalValue && v === true) return true;
      if (typeof v !== 'string') throw new UsageError(`${where} expects a string, got ${got}`);
      if (v === '') throw new UsageError(`${where} needs a non-empty value`);
      return v;
  }
}

const choiceText = (c: readonly string[]) => (c.length <= 3 ? `${c.slice(0, -1).join(', ')} or ${c[c.length - 1]}` : `one of ${c.join(', ')}`);

function rangeText(s: OptionSpec): string {
  const lo = s.gt !== undefined ? `> ${s.gt}` : s.min !== undefined ? `>= ${s.min}` : '';
  const hi = s.lt !== undefined ? `< ${s.lt}` : s.max !== undefined ? `<= ${s.max}` : '';
  if (lo && hi) return `in ${s.gt !== undefined ? '(' : '['}${s.gt ?? s.min}, ${s.lt ?? s.max}${s.lt !== undefined ? ')' : ']'}`;
  return (s.kind === 'int' && (s.min === 1 && !hi) ? 'a positive integer' : [s.kind === 'int' ? 'an integer' : '', lo, hi].filter(Boolean).join(' '));
}

const takesValue = (s: OptionSpec) => s.kind !== 'boolean';

/**
 * Parses argv against a command's schema (and the --config file it names) into typed options.
 * Throws UsageError with the flag's name for anything wrong.
 */
export function parseCommand<S extends Schema>(def: CommandDef<S>, argv: string[]): Options<S> {
  const schema: Schema = { ...def.options, config: { kind: 'string', help: '' } };
  const names = namesOf(schema);
  names.byName.set('config', 'config');
  const cmd = def.name;
  // 1. Normalize argv so util.parseArgs sees only what it understands, with our messages for
  //    what it would reject less clearly.
  const norm: string[] = [];
  const negated = new Set<string>();
  const spelled = new Map<string, string>(); // canonical -> the name the user typed (for messages)
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-h') { norm.push('--help'); continue; }
    if (a === '--') throw new UsageError(`unexpected '--' (values that start with '-' are written --flag=VALUE)`);
    if (!a.startsWith('-')) throw new UsageError(`unexpected argument '${a}' (flags start with --; a value that starts with '-' is written --flag=VALUE)`);
    if (!a.startsWith('--')) throw new UsageError(`unknown option ${a} (long flags only, e.g. --max-steps; see peft-ts ${cmd} --help)`);
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    let canon = names.byName.get(name);
    if (canon === undefined && name.startsWith('no-') && schema[name.slice(3)]?.kind === 'boolean') {
      const base = name.slice(3);
      if (eq >= 0) throw new UsageError(`--${name} takes no value`);
      negated.add(base); spelled.set(base, name); continue;
    }
    if (canon === undefined) throw unknownOption(cmd, name, names);
    spelled.set(canon, name);
    const spec = canon === 'help' ? { kind: 'boolean' as const, help: '' } : schema[canon];
    if (!takesValue(spec)) {
      if (eq >= 0) {
        const v = a.slice(eq + 1).toLowerCase();
        if (['true', '1', 'yes'].includes(v)) { norm.push(`--${name}`); continue; }
        if (['false', '0', 'no'].includes(v)) { negated.add(canon); continue; }
        throw new UsageError(`--${name} is a switch; write --${name} or --no-${name}, not --${name}=${a.slice(eq + 1)}`);
      }
      norm.push(a); continue;
    }
    if (eq >= 0) { norm.push(a); continue; }
    const next = argv[i + 1];
    if (spec.optionalValue && (next === undefined || next.startsWith('-'))) { norm.push(`--${name}=`); continue; }
    if (next === undefined) throw new UsageError(`--${name} needs a value${spec.metavar ? ` (${spec.metavar})` : ''}`);
    if (next.startsWith('-') && !(spec.kind === 'number' || spec.kind === 'int') || next.startsWith('--')) {
      throw new UsageError(`--${name} needs a value, got '${next}' next, which starts with '-' (a value that starts with '-' is written --${name}="${next}")`);
    }
    norm.push(`--${name}=${next}`); i++;
  }
  // 2. util.parseArgs, strict: every name is declared, value flags have values.
  const decl: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { help: { type: 'boolean' } };
  for (const [name, canon] of names.byName) {
    if (name === 'help') continue;
    const s = schema[canon];
    decl[name] = { type: takesValue(s) ? 'string' : 'boolean', ...(s.kind === 'strings' ? { multiple: true } : {}) };
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = nodeParseArgs({ args: norm, options: decl, strict: true, allowPositionals: false }).values as Record<string, unknown>;
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split('\n')[0]}`);
  }
  // 3. Raw values by canonical name; an alias and its canonical name may not both be given.
  const raw = new Map<string, { v: unknown; where: string }>();
  for (const [name, v] of Object.entries(parsed)) {
    if (v === undefined) continue;
    const canon = names.byName.get(name)!;
    if (canon === 'help') continue;
    const prev = raw.get(canon);
    if (prev && prev.where !== `--${name}`) throw new UsageError(`${prev.where} and --${name} are the same option; give it once`);
    const s = schema[canon];
    raw.set(canon, { v: s.optionalValue && v === '' ? true : s.kind === 'strings' && prev ? [...(prev.v as string[]), ...(v as string[])] : v, where: `--${name}` });
  }
  for (const b of negated) {
    if (raw.has(b)) throw new UsageError(`--${b} and --no-${b} both given`);
    raw.set(b, { v: false, where: `--${spelled.get(b)}` });
  }
  // 4. --config FILE: the same options as JSON; keys in any of snake_case, kebab-case, camelCase.
  const cfg = raw.get('config');
  raw.delete('config');
  if (cfg) {
    const file = cfg.v as string;
    const json = readJsonFile(file, { what: '--config', maxBytes: 16 << 20 });
    if (!json || typeof json !== 'object' || Array.isArray(json)) throw new UsageError(`--config ${file}: expected a JSON object of options, got ${Array.isArray(json) ? 'an array' : JSON.stringify(json)}`);
    for (const [key, v] of Object.entries(json as Record<string, unknown>)) {
      const canon = names.byName.get(kebab(key));
      if (canon === undefined || canon === 'help' || canon === 'config') {
        throw new UsageError(`--config ${file}: unknown option "${key}"${suggest(kebab(key), names).replace('did you mean --', 'did you mean ').replace('?)', ', written as the flag?)')}`);
      }
      if (raw.has(canon)) continue; // the command line wins
      if (v === null) continue;
      raw.set(canon, { v, where: `--config ${file}: "${key}"` });
    }
  }
  // 5. Convert, check, default.
  const out: Record<string, unknown> = { help: parsed.help === true, given: new Set<string>() };
  for (const [canon, spec] of Object.entries(def.options)) {
    const key = camel(canon);
    const r = raw.get(canon);
    if (r) {
      out[key] = convert(spec, r.v, r.where);
      (out.given as Set<string>).add(key);
    } else out[key] = spec.kind === 'boolean' ? (spec.default ?? false) : spec.default;
  }
  if (!out.help) {
    for (const [canon, spec] of Object.entries(def.options)) if (spec.required && out[camel(canon)] === undefined) throw new UsageError(`--${canon} is required`);
  }
  return out as Options<S>;
}

/**
 * Options of a command from an object (camelCase keys, typed values), checked exactly as flags
 * are: for callers that run a command's code directly (the demo runs train this way).
 */
export function commandOptions<S extends Schema>(def: CommandDef<S>, values: Record<string, unknown>): Options<S> {
  const names = namesOf(def.options);
  const out: Record<string, unknown> = { help: false, given: new Set<string>() };
  for (const k of Object.keys(values)) if (!names.byName.has(kebab(k)) || kebab(k) === 'help') throw unknownOption(def.name, kebab(k), names);
  for (const [canon, spec] of Object.entries(def.options)) {
    const key = camel(canon);
    const v = values[key];
    if (v !== undefined) { out[key] = convert(spec, v, `${def.name}: ${key}`); (out.given as Set<string>).add(key); }
    else out[key] = spec.kind === 'boolean' ? (spec.default ?? false) : spec.default;
    if (spec.required && out[key] === undefined) throw new UsageError(`${def.name}: ${key} is required`);
  }
  return out as Options<S>;
}

/** --help text generated from the schema, grouped as declared. */
export function helpText(def: CommandDef): string {
  const lines = [`peft-ts ${def.name}: ${def.summary}`, ''];
  if (def.usage) lines.push(`usage: peft-ts ${def.name} ${def.usage}`, '');
  const groups = new Map<string, string[]>();
  const entries = Object.entries(def.options);
  const left = (k: string, s: OptionSpec) => {
    const mv = s.kind === 'boolean' ? '' : ' ' + (s.metavar ?? (s.kind === 'enum' ? (s.choices!.join('|').length > 24 ? 'NAME' : s.choices!.join('|')) : s.kind === 'int' ? 'N' : s.kind === 'number' ? 'X' : s.kind === 'list' ? 'a,b,...' : s.kind === 'targets' ? 'a,b|REGEX' : 'S'));
    const opt = s.optionalValue ? ` [${(s.metavar ?? 'S')}]` : mv;
    return `  --${k}${opt}${(s.alias ?? []).map((a) => `, --${a}`).join('')}`;
  };
  const width = Math.min(44, Math.max(...entries.map(([k, s]) => left(k, s).length)) + 2);
  for (const [k, s] of entries) {
    const g = s.group ?? '';
    const def0 = s.defaultText ?? (s.default !== undefined && s.kind !== 'boolean' ? String(s.default) : s.kind === 'boolean' && s.default === true ? `on; --no-${k} turns it off` : '');
    const extra = [s.required ? 'required' : '', s.kind === 'enum' && s.choices!.join('|').length > 24 ? `one of ${s.choices!.join(', ')}` : '', def0 ? `default ${def0}` : '', s.kind !== 'enum' && (s.min !== undefined || s.max !== undefined || s.gt !== undefined || s.lt !== undefined) ? rangeText(s) : ''].filter(Boolean);
    const l = left(k, s);
    const text = `${s.help}${extra.length ? ` (${extra.join('; ')})` : ''}`;
    (groups.get(g) ?? groups.set(g, []).get(g)!).push(l.length + 1 > width ? `${l}\n${' '.repeat(width)}${text}` : `${l.padEnd(width)}${text}`);
  }
  for (const [g, ls] of groups) { if (g) lines.push(g); lines.push(...ls); }
  lines.push(`  --config FILE.json${' '.repeat(Math.max(1, width - 20))}any of the above as JSON (keys as flags or TrainingArguments' snake_case: learning_rate); flags win`);
  if (def.epilog) lines.push('', def.epilog);
  return lines.join('\n');
}
