// Gradient checkpointing: run fn without recording a graph, keep only its inputs, and in
// backward run it again with the graph on. Trades one extra forward for the activations.
import { Tensor, enableGrad, isGradEnabled, noGrad } from '../tensor.js';
import type { Rng } from '../random.js';
import { tidy } from '../memory.js';

/**
 * y = fn(...inputs), recomputed in backward. Rngs listed are snapshot before the forward and
 * restored before the recompute, so dropout masks are the same both times. fn must be a pure
 * function of its inputs and of parameters it closes over.
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], rngs: Rng[] = []): Tensor {
  if (!isGradEnabled()) return fn(...inputs);
  const states = rngs.map((r) => r.getState());
  // Own scopes for the forward and for the recompute: without them the intermediates would
  // live until the caller's tidy() ends, and checkpointing would save nothing.
  const out = tidy(() => noGrad(() => fn(...inputs)));
  const backwardFn = (gy: Tensor): (Tensor | null)[] => {
    rngs.forEach((r, i) => r.setState(states[i]));
    return tidy(() => {
      const leaves = inputs.map((x) => {
        const l = x.detach();
        l.requiresGrad = x.requiresGrad;
        return l;
      });
      const y = enableGrad(() => fn(...leaves));
      if (y.requiresGrad) y.backward(gy);
      return leaves.map((l) => (l.requiresGrad ? l.grad : null));
    });
  };
  // Linked even when no input needs grad: parameters inside fn still do.
  out.requiresGrad = true;
  out.node = { name: 'checkpoint', inputs, backward: backwardFn };
  return out;
}
