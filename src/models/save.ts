// save_pretrained: config.json + model.safetensors that transformers can load.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeSafetensors, SAFETENSORS_WEIGHTS } from '../io/safetensors.js';
import type { HFModel } from './base.js';
import { configJsonText } from '../io/config.js';

/** Writes config.json and model.safetensors (float32, tied aliases left out), each atomically. */
export function savePretrained(model: HFModel, dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, SAFETENSORS_WEIGHTS), model.checkpointStateDict(), { format: 'pt' });
  const cfgFile = path.join(dir, 'config.json');
  const tmp = path.join(dir, `.config.json.tmp-${process.pid}-${Date.now().toString(36)}`);
  fs.writeFileSync(tmp, configJsonText(model.configForSave()));
  fs.renameSync(tmp, cfgFile);
}
