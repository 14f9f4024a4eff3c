// Long loops (training steps, evaluation batches, decoding steps) await this between units
// of work so timers, I/O and servers sharing the process keep running. setImmediate (not a
// resolved promise) because only a macrotask lets the event loop reach its timer and poll
// phases.
export function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** The error an AbortSignal's abort turns into (Node's own name and code for it). */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR';
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/** Throws an AbortError when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined | null, what: string): void {
  if (signal?.aborted) throw new AbortError(`${what} was aborted`, { cause: signal.reason });
}
