// peft's get_layer_status / get_model_status: what each adapter layer holds and does, and the
// model-wide summary ("irregular" where layers disagree), with peft's field names camelCased.
import type { Tensor } from '../tensor/tensor.js';
import { LoraEmbedding } from './embedding.js';
import type { LoraLayer } from './embedding.js';
import { LoraLinear } from './layer.js';
import type { ModulesToSaveWrapper } from './modules-to-save.js';
import type { LoraConfig } from './config.js';

export type Irregular = 'irregular';

export interface TunerLayerStatus {
  name: string;
  moduleType: string;
  enabled: boolean;
  activeAdapters: string[];
  mergedAdapters: string[];
  requiresGrad: Record<string, boolean | Irregular>;
  availableAdapters: string[];
  devices: Record<string, string[]>;
  quantizationBackend: string | null;
}

export interface TunerModelStatus {
  baseModelType: string;
  adapterModelType: string;
  peftTypes: Record<string, string>;
  trainableParams: number;
  totalParams: number;
  numAdapterLayers: number;
  enabled: boolean | Irregular;
  activeAdapters: string[] | Irregular;
  mergedAdapters: string[] | Irregular;
  requiresGrad: Record<string, boolean | Irregular>;
  availableAdapters: string[];
  devices: Record<string, string[]>;
  quantizationBackend: string | null | Irregular;
}

export interface StatusHost {
  readonly peftConfig: Map<string, LoraConfig>;
  loraLayers(): [string, LoraLayer][];
  modulesToSaveWrappers(): [string, ModulesToSaveWrapper][];
  getBaseModel(): object;
  getNbTrainableParameters(): [number, number];
}

/** The device name peft reports for our tensors: 'cuda' on the CUDA backend, else 'cpu'. */
function deviceOf(t: Tensor): string {
  const b = (t as unknown as { backend?: { name?: string } }).backend?.name ?? '';
  return b === 'cuda' ? 'cuda' : 'cpu';
}

const allOrNone = (vals: boolean[]): boolean | Irregular => (vals.every(Boolean) ? true : !vals.some(Boolean) ? false : 'irregular');

/** Per adapter: the tensors of that adapter in this layer (A, B, DoRA magnitude / the saved copy). */
function adapterTensors(m: LoraLayer | ModulesToSaveWrapper): Map<string, Tensor[]> {
  const out = new Map<string, Tensor[]>();
  const push = (k: string, ts: Tensor[]) => { if (!out.has(k)) out.set(k, []); out.get(k)!.push(...ts); };
  if (m instanceof LoraLinear) {
    for (const d of [m.loraA, m.loraB, m.loraMagnitudeVector]) for (const k of d.keys()) push(k, d.get(k)!.parameters());
  } else if (m instanceof LoraEmbedding) {
    for (const k of m.loraEmbeddingA.keys()) push(k, [m.loraEmbeddingA.getParameter(k)!]);
    for (const k of m.loraEmbeddingB.keys()) push(k, [m.loraEmbeddingB.getParameter(k)!]);
    for (const k of m.loraMagnitudeVector.keys()) push(k, m.loraMagnitudeVector.get(k)!.parameters());
  } else {
    for (const k of m.modulesToSave.keys()) push(k, m.modulesToSave.get(k)!.parameters());
  }
  return out;
}

/** peft's get_layer_status(model). */
export function getLayerStatus(host: StatusHost): TunerLayerStatus[] {
  const mods: [string, LoraLayer | ModulesToSaveWrapper][] = [...host.loraLayers(), ...host.modulesToSaveWrappers()];
  // named_modules order: by position in the module tree, i.e. by path as they were found.
  const order = new Map<string, number>();
  for (const [i, [p]] of mods.entries()) order.set(p, i);
  const out: TunerLayerStatus[] = [];
  for (const [path, m] of mods) {
    const tensors = adapterTensors(m);
    const requiresGrad: Record<string, boolean | Irregular> = {}, devices: Record<string, string[]> = {};
    for (const [k, ts] of tensors) {
      requiresGrad[k] = allOrNone(ts.map((t) => t.requiresGrad));
      devices[k] = [...new Set(ts.map(deviceOf))].sort();
    }
    const isWrapper = !(m instanceof LoraLinear) && !(m instanceof LoraEmbedding);
    const w = m as ModulesToSaveWrapper;
    out.push({
      name: `model.${path}`,
      moduleType: m instanceof LoraEmbedding ? 'lora.Embedding' : m instanceof LoraLinear ? 'lora.Linear' : 'ModulesToSaveWrapper',
      enabled: !m.disableAdapters,
      activeAdapters: isWrapper ? (w.activeAdapter === null ? [] : [w.activeAdapter]) : [...(m as LoraLayer).activeAdapters],
      mergedAdapters: isWrapper ? [] : [...(m as LoraLayer).mergedAdapters],
      requiresGrad,
      availableAdapters: [...(isWrapper ? w.adapterNames() : (m as LoraLayer).adapterNames())].sort(),
      devices,
      quantizationBackend: null,
    });
  }
  if (!out.length) throw new Error("No adapter layers found in the model, please ensure that it's a PEFT model or that you have PEFT adapters injected in the model.");
  return out;
}

/** peft's get_model_status(model). */
export function getModelStatus(host: StatusHost): TunerModelStatus {
  const layers = getLayerStatus(host);
  const [trainableParams, totalParams] = host.getNbTrainableParameters();
  const enabledSet = new Set(layers.map((l) => l.enabled));
  const actives = new Set(layers.map((l) => JSON.stringify(l.activeAdapters)));
  const mergedAll = new Set(layers.flatMap((l) => l.mergedAdapters));
  let mergedAdapters: string[] | Irregular = [...mergedAll].sort();
  for (const l of layers) {
    const unmerged = l.availableAdapters.filter((a) => !l.mergedAdapters.includes(a));
    if (unmerged.some((a) => mergedAll.has(a))) { mergedAdapters = 'irregular'; break; }
  }
  const rg = new Map<string, (boolean | Irregular)[]>();
  for (const l of layers) for (const [k, v] of Object.entries(l.requiresGrad)) { if (!rg.has(k)) rg.set(k, []); rg.get(k)!.push(v); }
  const requiresGrad: Record<string, boolean | Irregular> = {};
  for (const [k, vals] of rg) requiresGrad[k] = vals.every((v) => v === true) ? true : vals.every((v) => v === false) ? false : 'irregular';
  const devices: Record<string, string[]> = {};
  for (const l of layers) for (const [k, v] of Object.entries(l.devices)) devices[k] = [...new Set([...(devices[k] ?? []), ...v])].sort();
  const peftTypes: Record<string, string> = {};
  for (const k of host.peftConfig.keys()) peftTypes[k] = 'LORA';
  return {
    baseModelType: host.getBaseModel().constructor.name,
    adapterModelType: 'LoraModel',
    peftTypes, trainableParams, totalParams,
    numAdapterLayers: layers.length,
    enabled: enabledSet.size === 1 ? [...enabledSet][0] : 'irregular',
    activeAdapters: actives.size === 0 ? [] : actives.size === 1 ? JSON.parse([...actives][0]) : 'irregular',
    mergedAdapters, requiresGrad,
    availableAdapters: [...new Set(layers.flatMap((l) => l.availableAdapters))].sort(),
    devices,
    quantizationBackend: null,
  };
}
