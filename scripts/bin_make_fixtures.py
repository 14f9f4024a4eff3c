"""Makes test/fixtures/bin: PyTorch (torch.save zip) checkpoints of tiny test models, as
transformers < 5 wrote them with save_pretrained(safe_serialization=False) (pytorch_model.bin,
or shards with pytorch_model.bin.index.json), a peft adapter_model.bin, a file of odd tensors
(views with offsets and strides, shared storages, several dtypes) with their values, and
malicious pickles that must be refused. Run: /opt/pyref/bin/python scripts/bin_make_fixtures.py"""
import json, os, shutil, zipfile
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, '..', 'test', 'fixtures')
OUT = os.path.join(FIX, 'bin')
shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT)


def copy_configs(src, dst, names=('config.json',)):
    os.makedirs(dst, exist_ok=True)
    for n in names:
        shutil.copy(os.path.join(src, n), os.path.join(dst, n))


# gpt2 (tied lm_head / wte: one storage, two keys) as one pytorch_model.bin
src = os.path.join(FIX, 'models', 'gpt2_lm')
m = AutoModelForCausalLM.from_pretrained(src)
sd = m.state_dict()
assert sd['lm_head.weight'].data_ptr() == sd['transformer.wte.weight'].data_ptr()
copy_configs(src, os.path.join(OUT, 'gpt2_lm'))
torch.save(sd, os.path.join(OUT, 'gpt2_lm', 'pytorch_model.bin'))

# llama as two shards + pytorch_model.bin.index.json
src = os.path.join(FIX, 'models', 'llama_lm')
m = AutoModelForCausalLM.from_pretrained(src)
sd = m.state_dict()
d = os.path.join(OUT, 'llama_lm_sharded')
copy_configs(src, d)
keys = list(sd)
half = len(keys) // 2
weight_map, total = {}, 0
for i, part in enumerate([keys[:half], keys[half:]]):
    name = f'pytorch_model-{i + 1:05d}-of-00002.bin'
    torch.save({k: sd[k] for k in part}, os.path.join(d, name))
    for k in part:
        weight_map[k] = name
        total += sd[k].numel() * sd[k].element_size()
with open(os.path.join(d, 'pytorch_model.bin.index.json'), 'w') as f:
    json.dump({'metadata': {'total_size': total}, 'weight_map': weight_map}, f, indent=2)

# bert sequence classification, saved in bfloat16 (dtype conversion on read)
src = os.path.join(FIX, 'models', 'bert_seqcls')
m = AutoModelForSequenceClassification.from_pretrained(src)
copy_configs(src, os.path.join(OUT, 'bert_seqcls'))
torch.save({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in m.state_dict().items()},
           os.path.join(OUT, 'bert_seqcls', 'pytorch_model.bin'))

# peft adapter_model.bin: the gpt2_lora adapter's tensors as peft < 0.4 / safe_serialization=False wrote them
src = os.path.join(FIX, 'peft', 'gpt2_lora', 'adapter')
d = os.path.join(OUT, 'gpt2_lora_adapter')
copy_configs(src, d, ('adapter_config.json',))
torch.save(load_file(os.path.join(src, 'adapter_model.safetensors')), os.path.join(d, 'adapter_model.bin'))

# odd tensors: views (offset, transposed strides, expanded stride 0), shared storage, dtypes
g = torch.Generator().manual_seed(0)
base = torch.randn(5, 6, generator=g)
store = torch.arange(20, dtype=torch.float32)
odd = {
    'transposed': base.t(),                          # non-contiguous
    'slice': base[1:4, 2:5],                         # offset + row stride 6
    'expanded': torch.tensor([1.5, -2.0]).expand(3, 2),  # stride 0
    'shared_a': store[:8].view(2, 4),                # two tensors on one storage
    'shared_b': store[8:],                           # ... at offset 8
    'same': store[:8].view(2, 4),                    # the very same view again
    'f16': base[0].half(),
    'bf16': base[1].bfloat16(),
    'f64': base[2].double(),
    'i64': torch.tensor([[0, -5], [2**31 - 1, -2**31]], dtype=torch.int64),
    'i32': torch.tensor([7, -7], dtype=torch.int32),
    'u8': torch.tensor([0, 255], dtype=torch.uint8),
    'bool': torch.tensor([True, False]),
    'scalar': torch.tensor(3.25),
    'empty': torch.zeros(0, 3),
}
torch.save(odd, os.path.join(OUT, 'odd.bin'))
with open(os.path.join(OUT, 'odd_expected.json'), 'w') as f:
    json.dump({k: {'shape': list(v.shape), 'values': v.float().flatten().tolist() if v.is_floating_point() else v.flatten().long().tolist()}
               for k, v in odd.items()}, f)


# malicious pickles: a GLOBAL posix.system call (what torch.load(weights_only=False) would run)
class Evil:
    def __reduce__(self):
        return (os.system, ('echo pwned > /tmp/peft_ts_pwned',))


torch.save({'w': torch.zeros(2), 'evil': Evil()}, os.path.join(OUT, 'evil_global.bin'))
# a data.pkl using an opcode outside the allowed set (INST, protocol 0 'i')
with zipfile.ZipFile(os.path.join(OUT, 'evil_opcode.bin'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', b'(S\'echo pwned\'\nios\nsystem\n.')
    z.writestr('archive/byteorder', b'little')
    z.writestr('archive/version', b'3\n')
print('wrote', sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(OUT) for f in fs), 'bytes to', OUT)
