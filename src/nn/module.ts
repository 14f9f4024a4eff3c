// Module tree with PyTorch's naming: parameters and children registered by name, so that
// dotted paths ("transformer.h.0.attn.c_attn.weight") match Hugging Face checkpoints and
// peft can find and replace submodules by path.
import { Tensor } from '../tensor/tensor.js';

export abstract class Module {
  training = true;
  private readonly _params = new Map<string, Tensor | null>();
  private readonly _children = new Map<string, Module>();

  /** Registers (or replaces) a parameter; returns it. */
  registerParameter(name: string, t: Tensor | null): Tensor {
    this._params.set(name, t);
    return t as Tensor;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    this._children.set(name, m);
    return m;
  }

  getParameter(name: string): Tensor | null { return this._params.get(name) ?? null; }
  hasParameter(name: string): boolean { return this._params.has(name); }
  deleteParameter(name: string): void { this._params.delete(name); }

  /** Own parameter names, in registration order. */
  ownParameterNames(): string[] { return [...this._params.keys()]; }

  children(): [string, Module][] { return [...this._children.entries()]; }
  getChild(name: string): Module | undefined { return this._children.get(name); }
  deleteChild(name: string): void { this._children.delete(name); }

  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix, this];
    for (const [n, c] of this._children) yield* c.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  *namedParameters(prefix = ''): Generator<[string, Tensor]> {
    const seen = new Set<Tensor>();
    for (const [mp, m] of this.namedModules(prefix)) {
      for (const [n, p] of m._params) {
        if (!p || seen.has(p)) continue; // tied weights count once, under their first name
        seen.add(p);
        yield [mp ? `${mp}.${n}` : n, p];
      }
    }
  }

  /** Every name -> tensor, tied weights under each of their names (like a state_dict). */
  stateDict(prefix = ''): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    for (const [mp, m] of this.namedModules(prefix)) {
      for (const [n, p] of m._params) if (p) out.set(mp ? `${mp}.${n}` : n, p);
    }
    return out;
  }

  parameters(): Tensor[] { return [...this.namedParameters()].map(([, p]) => p); }

  getSubmodule(path: string): Module {
    if (path === '') return this;
    let m: Module = this;
    for (const part of path.split('.')) {
      const c = m._children.get(part) ?? m.resolveMissingChild(part);
      if (!c) throw new Error(`no submodule '${part}' in path '${path}' (${m.constructor.name} has: ${[...m._children.keys()].join(', ') || 'none'})`);
      m = c;
    }
    return m;
  }

  setSubmodule(path: string, mod: Module): void {
    const i = path.lastIndexOf('.');
    const parent = i < 0 ? this : this.getSubmodule(path.slice(0, i));
    const name = i < 0 ? path : path.slice(i + 1);
    if (!parent._children.has(name)) throw new Error(`no submodule '${path}' to replace`);
    parent._children.set(name, mod);
    parent.onChildReplaced(name, mod);
  }

  /**
   * Path lookup fallback for a name that is not a registered child: wrappers (peft's
   * ModulesToSaveWrapper) forward it to the module they stand in for. Not used by namedModules.
   */
  protected resolveMissingChild(_name: string): Module | undefined { return undefined; }

  /** Hook for modules that keep typed references to children (they re-read them here). */
  protected onChildReplaced(_name: string, _mod: Module): void {}

  train(mode = true): this {
    for (const [, m] of this.namedModules()) m.training = mode;
    return this;
  }

  eval(): this { return this.train(false); }

  /** Sets requiresGrad on every parameter. */
  requiresGrad_(v: boolean): this {
    for (const p of this.parameters()) if (p.dtype === 'float32') p.requiresGrad = v;
    return this;
  }

  numParameters(onlyTrainable = false): number {
    let n = 0;
    for (const p of this.parameters()) if (!onlyTrainable || p.requiresGrad) n += p.size;
    return n;
  }

  /**
   * Releases the buffers of every parameter (and gradient) and whatever disposeBuffers() holds
   * (caches), in this module and below: memoryStats().liveBytes drops by all of it at once,
   * instead of waiting for the garbage collector. The module is unusable afterwards.
   */
  dispose(): void {
    const seen = new Set<Tensor>();
    for (const [, m] of this.namedModules()) {
      for (const p of m._params.values()) if (p && !seen.has(p)) { seen.add(p); p.dispose(); }
      m.disposeBuffers();
    }
  }

  /** Hook for modules holding tensors that are not parameters (RoPE tables...): release them. */
  protected disposeBuffers(): void {}

  zeroGrad(): void {
    for (const p of this.parameters()) if (p.grad) { p.grad.dispose(); p.grad = null; }
  }
}

/** A list of modules named "0", "1", ... (torch.nn.ModuleList). */
export class ModuleList<M extends Module = Module> extends Module {
  constructor(mods: M[] = []) {
    super();
    mods.forEach((m, i) => this.registerModule(String(i), m));
  }
  get length(): number { return this.children().length; }
  at(i: number): M { return this.getSubmodule(String(i)) as M; }
  *[Symbol.iterator](): Iterator<M> { for (const [, m] of this.children()) yield m as M; }
}
