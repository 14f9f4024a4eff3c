// Which modules an adapter applies to, matched exactly as peft 0.21 does
// (check_target_module_exists, get_pattern_key, _set_trainable).
import { LoraConfig, pyFullMatch, pyMatch } from './config.js';

export type TargetMatch = 'match' | 'excluded' | 'no';

/** peft's check_target_module_exists for one module path. */
export function checkTargetModule(config: LoraConfig, key: string): TargetMatch {
  const ex = config.excludeModules;
  if (ex && ex.length) {
    if (typeof ex === 'string') { if (pyFullMatch(ex, key)) return 'excluded'; }
    else if (ex.includes(key) || ex.some((e) => endsWithDotted(key, e))) return 'excluded';
  }
  // Never put LoRA inside a module that is trained in full (peft guarantees the same).
  const mts = config.modulesToSave;
  if (mts && mts.some((m) => pyMatch(`(^|.*\\.)${m}($|\\..*)`, key))) return 'excluded';

  const tm = config.targetModules;
  if (tm === null) return 'no';
  if (typeof tm === 'string') return pyFullMatch(tm, key) ? 'match' : 'no';
  if (tm.includes(key)) return 'match';
  let found = tm.some((t) => endsWithDotted(key, t));
  const idx = config.layersToTransform;
  const usingIdx = idx !== null && (Array.isArray(idx) ? idx.length !== 0 : true);
  if (usingIdx && found) {
    let layerIndex: number | null = null;
    let m: RegExpExecArray | null = null;
    const lp = config.layersPattern;
    if (lp === null || lp.length === 0) {
      m = pyMatch('.*?\\.[^.]*\\.(?<idx>\\d+)\\.', key);
    } else {
      for (const p of typeof lp === 'string' ? [lp] : lp) {
        m = pyMatch(`(?:^|.*?\\.)${p}\\.(?<idx>\\d+)\\.`, key);
        if (m) break;
      }
    }
    if (m?.groups?.idx !== undefined) layerIndex = Number(m.groups.idx);
    if (layerIndex === null) found = false;
    else found = Array.isArray(idx) ? idx.includes(layerIndex) : layerIndex === idx;
  }
  return found ? 'match' : 'no';
}

// "key ends with .<suffix>": peft's list rule (so "attn" never matches "c_attn").
function endsWithDotted(key: string, suffix: string): boolean { return key.endsWith(`.${suffix}`); }

/** peft's get_pattern_key: the first rank/alpha pattern key matching the module path. */
export function patternKey(keys: string[], module: string): string | null {
  for (const k of keys) if (pyMatch(`(.*\\.)?(${k})$`, module)) return k;
  return null;
}

export function rankFor(config: LoraConfig, module: string): number {
  const k = patternKey(Object.keys(config.rankPattern), module);
  return k === null ? config.r : config.rankPattern[k];
}

export function alphaFor(config: LoraConfig, module: string): number {
  const k = patternKey(Object.keys(config.alphaPattern), module);
  return k === null ? config.loraAlpha : config.alphaPattern[k];
}

/** peft's _set_trainable rule for modules_to_save: a plain (not dotted) suffix match. */
export function matchesModulesToSave(names: string[], key: string): boolean {
  return names.some((n) => key.endsWith(n));
}

/** peft's MIN_TARGET_MODULES_FOR_OPTIMIZATION: from this many targets on, the list is condensed. */
export const MIN_TARGET_MODULES_FOR_OPTIMIZATION = 20;

/**
 * peft's _find_minimal_target_modules: the fewest name suffixes that match every target and
 * no other module (targets visited in the order of their suffix lists, shortest suffix first).
 */
export function minimalTargetModules(targets: string[], others: string[]): string[] {
  const suffixesOf = (s: string): string[] => {
    const parts = s.split('.');
    return parts.map((_, i) => parts.slice(i).join('.')).reverse();
  };
  const otherSuffixes = new Set(others.flatMap(suffixesOf));
  const cmp = (a: string[], b: string[]): number => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] < b[i] ? -1 : 1;
    return a.length - b.length;
  };
  const items = [...new Set(targets)].map((t) => [t, suffixesOf(t)] as const).sort((x, y) => cmp(x[1], y[1]));
  const required: string[] = [];
  for (const [item, suffixes] of items) {
    for (const sfx of suffixes) {
      if (required.includes(sfx) || otherSuffixes.has(sfx)) continue;
      if (!required.some((r) => item.endsWith(`.${r}`))) { required.push(sfx); break; }
    }
  }
  return required.length ? required : [...new Set(targets)];
}
