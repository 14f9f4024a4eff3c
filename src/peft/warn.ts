// peft reports recoverable misconfigurations with warnings.warn; we route them through one
// handler so that callers (and tests) can capture or silence them.
export type WarningHandler = (message: string) => void;

let handler: WarningHandler = (m) => console.warn(`peft-ts warning: ${m}`);

export function setPeftWarningHandler(fn: WarningHandler): WarningHandler {
  const prev = handler;
  handler = fn;
  return prev;
}

export function peftWarn(message: string): void { handler(message); }

/** Runs fn and returns the warnings it raised (and its result) instead of printing them. */
export function captureWarnings<T>(fn: () => T): { result: T; warnings: string[] } {
  const warnings: string[] = [];
  const prev = setPeftWarningHandler((m) => warnings.push(m));
  try { return { result: fn(), warnings }; } finally { setPeftWarningHandler(prev); }
}
