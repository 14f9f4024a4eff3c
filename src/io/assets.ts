// Where the package's own files are, wherever it is installed (a checkout, or
// node_modules/peft-ts of another project): the embedded default model and data sets.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The package root: walk up from this file to the folder with package.json and assets/, else the cwd. */
export function packageRoot(): string {
  let d = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(d, 'package.json')) && fs.existsSync(path.join(d, 'assets'))) return d;
    const up = path.dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
}

/** A path under the package's assets/ folder. */
export const assetPath = (...p: string[]): string => path.join(packageRoot(), 'assets', ...p);

/**
 * Absolute path of the embedded default model (a 1.35 M-parameter GPT-2 pretrained on the
 * King James Bible, with its tokenizer): `await AutoModelForCausalLM.fromPretrained(defaultModelPath)`
 * works from any project (a relative 'assets/default-model' would be taken as a Hub id there).
 */
export const defaultModelPath: string = assetPath('default-model');

/** Absolute path of a data set shipped in assets/data (e.g. 'kjv_section_train.jsonl'). */
export const defaultDataPath = (file: string): string => assetPath('data', file);
