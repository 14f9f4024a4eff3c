// A small flag parser: --name value, --name=value, --flag, and positionals. Kebab-case flags
// map to camelCase keys (--lora-alpha -> loraAlpha) so a JSON config and flags share names.
export interface ParsedArgs { positionals: string[]; flags: Record<string, string | boolean> }

export function camel(s: string): string { return s.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()); }

export function parseArgs(argv: string[], booleanFlags: Set<string> = new Set()): ParsedArgs {
  const positionals: string[] = [];
  const flags: Record<string, string | boolean> = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { positionals.push(...argv.slice(i + 1)); break; }
    if (!a.startsWith('--')) { positionals.push(a); continue; }
    const eq = a.indexOf('=');
    const name = camel(eq >= 0 ? a.slice(2, eq) : a.slice(2));
    if (eq >= 0) { flags[name] = a.slice(eq + 1); continue; }
    if (name.startsWith('no') && booleanFlags.has(name[2].toLowerCase() + name.slice(3))) {
      flags[name[2].toLowerCase() + name.slice(3)] = false; continue;
    }
    const next = argv[i + 1];
    if (booleanFlags.has(name) || next === undefined || next.startsWith('--')) { flags[name] = true; continue; }
    flags[name] = next; i++;
  }
  return { positionals, flags };
}

export class UsageError extends Error {}

export function num(flags: Record<string, unknown>, name: string, def?: number): number | undefined {
  const v = flags[name];
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} expects a number, got '${String(v)}'`);
  return n;
}

export function str(flags: Record<string, unknown>, name: string, def?: string): string | undefined {
  const v = flags[name];
  if (v === undefined || v === true) return def;
  return String(v);
}

export function list(flags: Record<string, unknown>, name: string): string[] | undefined {
  const v = flags[name];
  if (v === undefined) return undefined;
  if (Array.isArray(v)) return v.map(String);
  return String(v).split(',').map((s) => s.trim()).filter(Boolean);
}

export function bool(flags: Record<string, unknown>, name: string, def = false): boolean {
  const v = flags[name];
  if (v === undefined) return def;
  if (typeof v === 'boolean') return v;
  return !['false', '0', 'no'].includes(String(v).toLowerCase());
}
