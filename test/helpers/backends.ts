// Which backends a test can run on: reference always, cpu when the addon is built.
import { cpuAvailable } from '../../src/backends/index.js';

export const hasCpu = cpuAvailable();
export const SKIP_CPU = hasCpu ? false : 'native addon not built (npm run build:native)';

/** [name, skip] pairs for node:test's { skip } option. */
export const BACKENDS: [string, string | false][] = [['reference', false], ['cpu', SKIP_CPU]];
