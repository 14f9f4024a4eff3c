// peft's ModulesToSaveWrapper: a module trained in full for an adapter. The original stays
// frozen under "original_module"; each adapter gets its own copy under
// "modules_to_save.<adapter>", and forward runs the active adapter's copy.
import type { Tensor } from '../tensor/tensor.js';
import { Module } from '../nn/module.js';
import { ModuleDict } from './layer.js';
import { cloneModule } from './clone.js';
import { castWeights } from '../nn/dtype.js';

type Forwardable = Module & { forward(...args: unknown[]): unknown };

export class ModulesToSaveWrapper extends Module {
  activeAdapter: string | null = null;
  disableAdapters = false;

  constructor(original: Module, adapterName: string) {
    super();
    this.registerModule('original_module', original);
    this.registerModule('modules_to_save', new ModuleDict());
    original.requiresGrad_(false);
    this.update(adapterName);
  }

  get originalModule(): Module { return this.getChild('original_module')!; }
  get modulesToSave(): ModuleDict { return this.getChild('modules_to_save') as ModuleDict; }
  adapterNames(): string[] { return this.modulesToSave.keys(); }

  /** Adds a fresh copy of the original for this adapter (frozen until set active). */
  update(adapterName: string): void {
    if (this.modulesToSave.has(adapterName)) return;
    const copy = cloneModule(this.originalModule);
    // The trained copy holds float32 master weights even when the original is bf16.
    castWeights(copy, 'float32', { skip: [], releasePool: false });
    copy.requiresGrad_(false);
    this.modulesToSave.set(adapterName, copy);
  }

  setAdapter(name: string | null, inferenceMode = false): void {
    for (const k of this.modulesToSave.keys()) this.modulesToSave.get(k)!.requiresGrad_(false);
    if (name !== null) {
      const m = this.modulesToSave.get(name);
      if (!m) throw new Error(`adapter '${name}' not found in modules_to_save (has: ${this.adapterNames().join(', ') || 'none'})`);
      m.requiresGrad_(!inferenceMode);
    }
    this.activeAdapter = name;
  }

  deleteAdapter(name: string): void {
    const m = this.modulesToSave.get(name);
    if (!m) return;
    for (const p of m.parameters()) p.dispose();
    this.modulesToSave.delete(name);
    if (this.activeAdapter === name) this.activeAdapter = null;
  }

  /** The module forward currently runs. */
  current(): Module {
    if (this.disableAdapters || this.activeAdapter === null) return this.originalModule;
    return this.modulesToSave.get(this.activeAdapter) ?? this.originalModule;
  }

  forward(...args: unknown[]): Tensor {
    const m = this.current() as unknown as Partial<Forwardable>;
    // Containers without forward() are reached by path instead (resolveMissingChild).
    if (typeof m.forward !== 'function') throw new Error(`modules_to_save: ${m.constructor?.name} has no forward(); call its submodules`);
    return m.forward(...args) as Tensor;
  }

  // Models find submodules by path ("classifier.dense"): resolve through the active copy.
  protected override resolveMissingChild(name: string): Module | undefined { return this.current().getChild(name); }

  // Models that read fields of their heads (weight, bias, inFeatures...) see the active copy.
  get weight(): Tensor | null { return this.current().getParameter('weight'); }
  get bias(): Tensor | null { return this.current().getParameter('bias'); }
  get inFeatures(): number | undefined { return (this.current() as { inFeatures?: number }).inFeatures; }
  get outFeatures(): number | undefined { return (this.current() as { outFeatures?: number }).outFeatures; }
}
