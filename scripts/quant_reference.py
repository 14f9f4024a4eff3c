"""NF4 + double-quantization reference (bitsandbytes' published algorithm, no bnb needed).

Writes test/fixtures/quant/nf4_cases.json (float arrays as base64 little-endian bytes) and
src/quant/maps.ts (the 16 NF4 codes and the 256-entry signed dynamic map as float32 bits).

Algorithm, as in bnb's CUDA kQuantizeBlockwise:
  absmax = max |x| over a block (blocks of 64, row-major flattened, last block partial)
  scaled = x * float32(1 / absmax)      (the kernel multiplies by the reciprocal)
  nf4    = dQuantizeNF4(scaled): a decision tree over float32 midpoints, strict '>',
           so a value exactly on a midpoint goes to the lower code (NaN -> code 0)
  packed = first element of each pair in the HIGH nibble; odd count padded with a 0 value
Double quantization (compress_statistics=True):
  offset = mean(absmax); (absmax - offset) quantized blockwise (256) with
  create_dynamic_map(signed=True) via the CUDA dQuantize<0> binary search.
"""
import base64, json, os, sys
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
f32 = np.float32

NF4 = np.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=f32)
# Midpoints computed in double, then compiled as float literals in the kernel.
NF4_THR = np.array([(float(NF4[i]) + float(NF4[i + 1])) / 2 for i in range(15)], dtype=f32)


def create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    additional_items = 2 ** (non_sign_bits - max_exponent_bits) - 1
    for i in range(max_exponent_bits):
        fraction_items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1 if signed
                             else 2 ** (i + non_sign_bits - max_exponent_bits + 1) + 1)
        boundaries = torch.linspace(0.1, 1, fraction_items, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    if additional_items > 0:
        boundaries = torch.linspace(0.1, 1, additional_items + 1, dtype=torch.float32)
        means = (boundaries[:-1] + boundaries[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
        if signed:
            data += (-(10 ** (-(max_exponent_bits - 1) + i)) * means).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 2 ** total_bits
    data += [0] * (256 - len(data))
    data.sort()
    return np.array(data, dtype=f32)


DYN = create_dynamic_map()


def nf4_index(scaled):
    # count of thresholds strictly below x == the decision tree with strict '>'
    idx = np.searchsorted(NF4_THR, scaled, side='left').astype(np.uint8)
    idx[np.isnan(scaled)] = 0
    return idx


def dquantize8(code, x):
    """Port of the CUDA dQuantize<0> binary search (float32 arithmetic)."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f32(-1.0), f32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        mid = f32((upper + val) * f32(0.5))
        return upper_pivot if x > mid else pivot
    mid = f32((lower + val) * f32(0.5))
    return lower_pivot if x < mid else pivot


def blockwise_absmax(x, bs):
    n = x.size
    nb = (n + bs - 1) // bs
    pad = np.zeros(nb * bs, dtype=f32)
    pad[:n] = np.abs(x)
    return pad.reshape(nb, bs).max(axis=1).astype(f32)


def scale_blocks(x, absmax, bs):
    with np.errstate(divide='ignore', invalid='ignore'):
        recip = (f32(1.0) / absmax).astype(f32)
        return (x * np.repeat(recip, bs)[: x.size]).astype(f32)


def quantize_nf4(x, bs=64):
    absmax = blockwise_absmax(x, bs)
    scaled = scale_blocks(x, absmax, bs)
    q = nf4_index(scaled)
    # independent check: torch-style argmin |scaled - code| (ties to the first/lower code)
    with np.errstate(invalid='ignore'):
        am = np.argmin(np.abs(scaled[:, None] - NF4[None, :]), axis=1)
    am[np.isnan(scaled)] = 0
    dis = int((am != q).sum())
    if len(q) % 2:
        q = np.concatenate([q, nf4_index(np.zeros(1, dtype=f32))])
    packed = ((q[0::2] << 4) | q[1::2]).astype(np.uint8)
    return packed, absmax, dis


def quantize_blockwise8(x, bs=256):
    absmax = blockwise_absmax(x, bs)
    scaled = scale_blocks(x, absmax, bs)
    q = np.array([dquantize8(DYN, s) for s in scaled], dtype=np.uint8)
    with np.errstate(invalid='ignore'):
        am = np.argmin(np.abs(np.clip(scaled, -1, 1)[:, None] - DYN[None, :]), axis=1)
    dis = int((am[~np.isnan(scaled)] != q[~np.isnan(scaled)]).sum())
    return q, absmax, dis


def dequant_nf4(packed, absmax, n, bs=64):
    q = np.empty(packed.size * 2, dtype=np.uint8)
    q[0::2] = packed >> 4
    q[1::2] = packed & 15
    return (NF4[q[:n]] * np.repeat(absmax, bs)[:n]).astype(f32)


def b64(a):
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode()


def make_case(name, w):
    w = w.astype(f32)
    flat = w.reshape(-1)
    n = flat.size
    packed, absmax, dis4 = quantize_nf4(flat)
    deq = dequant_nf4(packed, absmax, n)
    # double quantization
    offset = f32(absmax.astype(np.float64).sum() / absmax.size)
    torch_mean = f32(torch.from_numpy(absmax).mean().item())
    centered = (absmax - offset).astype(f32)
    qabs, nabs, dis8 = quantize_blockwise8(centered)
    absmax_dq = ((DYN[qabs] * np.repeat(nabs, 256)[: absmax.size]).astype(f32) + offset).astype(f32)
    deq2 = dequant_nf4(packed, absmax_dq, n)
    print(f'{name}: n={n} blocks={absmax.size} nf4-vs-argmin disagreements={dis4} '
          f'8bit-vs-argmin disagreements={dis8} offset={offset!r} torch.mean={torch_mean!r}', file=sys.stderr)
    # QuantState.as_dict(packed=True)'s JSON blob (non-tensor items in insertion order)
    qs_json = json.dumps({'quant_type': 'nf4', 'blocksize': 64, 'dtype': 'float32', 'shape': tuple(w.shape),
                          'nested_blocksize': 256, 'nested_dtype': 'float32', 'nested_offset': float(offset)})
    return {
        'name': name, 'shape': list(w.shape), 'input': b64(flat), 'quantStateJson': qs_json,
        'packed': b64(packed), 'absmax': b64(absmax), 'dequant': b64(deq),
        'offset': float(offset), 'qabsmax': b64(qabs), 'nestedAbsmax': b64(nabs),
        'absmaxDequant': b64(absmax_dq), 'dequantNested': b64(deq2),
    }


def main():
    rng = np.random.default_rng(1234)
    cases = []
    cases.append(make_case('normal_8x64', rng.standard_normal((8, 64)) * 0.02))
    cases.append(make_case('odd_7x33', rng.standard_normal((7, 33))))
    # ties: absmax 1.0 so the reciprocal is exact and values land on the float32 midpoints
    ties = np.zeros((2, 64), dtype=f32)
    ties[0, 0] = 1.0
    ties[0, 1:16] = NF4_THR
    ties[0, 16:31] = np.nextafter(NF4_THR, f32(2))
    ties[0, 31:46] = np.nextafter(NF4_THR, f32(-2))
    ties[0, 46:62] = NF4
    # second block all zeros (absmax 0 -> 0 * inf = NaN -> code 0)
    cases.append(make_case('ties_2x64', ties))
    scales = np.exp(rng.uniform(-6, 1, size=(257, 1)))
    cases.append(make_case('scaled_257x65', rng.standard_normal((257, 65)) * scales))
    cases.append(make_case('tiny_1x5', np.array([[0.5, -0.25, 3.0, 0.0, -3.0]])))
    out = os.path.join(ROOT, 'test/fixtures/quant/nf4_cases.json')
    with open(out, 'w') as f:
        json.dump({'nf4': b64(NF4), 'dynamicMap': b64(DYN), 'cases': cases}, f)
    print('wrote', out, os.path.getsize(out), 'bytes', file=sys.stderr)

    def hexes(a):
        return ',\n  '.join(', '.join('0x%08x' % v for v in a.view(np.uint32)[i:i + 8]) for i in range(0, a.size, 8))
    ts = ('// Generated by scripts/quant_reference.py: do not edit.\n'
          '// float32 bit patterns of bitsandbytes\' NF4 code and create_dynamic_map(signed=True).\n'
          f'export const NF4_BITS = [\n  {hexes(NF4)},\n];\n'
          f'export const DYNAMIC_MAP_BITS = [\n  {hexes(DYN)},\n];\n')
    with open(os.path.join(ROOT, 'src/quant/maps.ts'), 'w') as f:
        f.write(ts)


if __name__ == '__main__':
    main()
