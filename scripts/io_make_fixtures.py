"""Makes test/fixtures/io: safetensors files written by the Python library, a sharded
checkpoint folder, and two tiny tokenizers (GPT-2 byte-level BPE, BERT WordPiece) with the
ids transformers produces for a few strings. Run: /opt/pyref/bin/python scripts/io_make_fixtures.py"""
import json, os, shutil
import torch
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), '..', 'test', 'fixtures', 'io')
shutil.rmtree(OUT, ignore_errors=True)
os.makedirs(OUT)
g = torch.Generator().manual_seed(0)


def vals(t):
    return t.float().flatten().tolist() if t.is_floating_point() else t.flatten().int().tolist()


# --- safetensors written by Python ---
f32 = {'w': torch.randn(3, 4, generator=g), 'bias': torch.randn(4, generator=g),
       'ids': torch.tensor([[1, -2, 3], [2147483647, -2147483648, 0]], dtype=torch.int32),
       'empty': torch.zeros(0, 3), 'scalar': torch.tensor(2.5)}
save_file(f32, os.path.join(OUT, 'py_f32_i32.safetensors'), metadata={'format': 'pt'})
save_file({k: (v.bfloat16() if v.is_floating_point() else v) for k, v in f32.items()},
          os.path.join(OUT, 'py_bf16.safetensors'), metadata={'format': 'pt'})
save_file({k: (v.half() if v.is_floating_point() else v) for k, v in f32.items()},
          os.path.join(OUT, 'py_f16.safetensors'))  # no metadata at all
mixed = {
    'f16': torch.tensor([0.1, -2.0, 65504.0, 6e-8], dtype=torch.float16),
    'bf16': torch.tensor([0.1, -3.0e38, 1.0], dtype=torch.bfloat16),
    'f64': torch.tensor([[1.5, -0.25]], dtype=torch.float64),
    'i64': torch.tensor([0, -5, 2**31 - 1, -2**31], dtype=torch.int64),
    'i16': torch.tensor([-300, 300], dtype=torch.int16),
    'i8': torch.tensor([-128, 127], dtype=torch.int8),
    'u8': torch.tensor([0, 255, 7], dtype=torch.uint8),
    'bool': torch.tensor([True, False, True]),
}
save_file(mixed, os.path.join(OUT, 'py_mixed.safetensors'), metadata={'format': 'pt'})
save_file({'big': torch.tensor([2**31], dtype=torch.int64)}, os.path.join(OUT, 'py_i64_overflow.safetensors'))
json.dump({
    'f32': {k: {'shape': list(v.shape), 'values': vals(v)} for k, v in f32.items()},
    'mixed': {k: {'shape': list(v.shape), 'values': vals(v)} for k, v in mixed.items()},
}, open(os.path.join(OUT, 'safetensors_expected.json'), 'w'))

# --- sharded checkpoint, laid out as transformers' save_pretrained does ---
sh = os.path.join(OUT, 'sharded')
os.makedirs(sh)
parts = [{'a.weight': torch.randn(2, 2, generator=g), 'a.bias': torch.randn(2, generator=g)},
         {'b.weight': torch.randn(3, 2, generator=g)}]
wm, total = {}, 0
for i, p in enumerate(parts):
    name = f'model-{i + 1:05d}-of-{len(parts):05d}.safetensors'
    save_file(p, os.path.join(sh, name), metadata={'format': 'pt'})
    for k, v in p.items():
        wm[k] = name
        total += v.numel() * 4
json.dump({'metadata': {'total_size': total}, 'weight_map': dict(sorted(wm.items()))},
          open(os.path.join(sh, 'model.safetensors.index.json'), 'w'), indent=2)
json.dump({k: vals(v) for p in parts for k, v in p.items()}, open(os.path.join(OUT, 'sharded_expected.json'), 'w'))

# --- tokenizers ---
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers, processors
from transformers import PreTrainedTokenizerFast, BertTokenizerFast

corpus = ['Hello world, this is a tiny corpus for a tiny tokenizer.',
          'LoRA adapters fine-tune large language models cheaply.',
          'The quick brown fox jumps over the lazy dog. 12345 !?',
          'Ünïcödé text and emojis 🤗 are bytes too.'] * 5
bpe = Tokenizer(models.BPE())
bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
bpe.decoder = decoders.ByteLevel()
bpe.post_processor = processors.ByteLevel(trim_offsets=False)
bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=['<|endoftext|>'],
                                                    initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
gpt2 = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token='<|endoftext|>', eos_token='<|endoftext|>',
                               unk_token='<|endoftext|>', model_max_length=16)
gpt2.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
gpt2_dir = os.path.join(OUT, 'tok_gpt2')
gpt2.save_pretrained(gpt2_dir)

vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + list('abcdefghijklmnopqrstuvwxyz.,!?') + \
    ['hello', 'world', 'the', 'lo', '##ra', '##s', '##ing', 'fine', '-', 'tune', 'un', '##aff', '##able', 'is', 'test']
bert_dir = os.path.join(OUT, 'tok_bert')
os.makedirs(bert_dir)
with open(os.path.join(bert_dir, 'vocab.txt'), 'w') as f:
    f.write('\n'.join(vocab) + '\n')
bert = BertTokenizerFast(os.path.join(bert_dir, 'vocab.txt'), do_lower_case=True, model_max_length=12)
os.remove(os.path.join(bert_dir, 'vocab.txt'))
bert.save_pretrained(bert_dir)
for f in ('vocab.txt', 'special_tokens_map.json'):
    p = os.path.join(bert_dir, f)
    if os.path.exists(p):
        os.remove(p)

# Llama-2 style: SentencePiece-like BPE with byte fallback, "▁" for spaces, <s> prepended.
from tokenizers import normalizers
sp = Tokenizer(models.BPE(byte_fallback=True, unk_token='<unk>', fuse_unk=True))
sp.normalizer = normalizers.Sequence([normalizers.Prepend('▁'), normalizers.Replace(' ', '▁')])
sp.decoder = decoders.Sequence([decoders.Replace('▁', ' '), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(' ', 1, 0)])
sp.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=120, special_tokens=['<unk>', '<s>', '</s>']))
spj = json.loads(sp.to_str())
for i in range(256):  # byte tokens live in the model vocab (not special), as in Llama's
    spj['model']['vocab'][f'<0x{i:02X}>'] = len(spj['model']['vocab'])
sp = Tokenizer.from_str(json.dumps(spj))
sp.post_processor = processors.TemplateProcessing(single='<s> $A', pair='<s> $A <s> $B', special_tokens=[('<s>', 1)])
llama = PreTrainedTokenizerFast(tokenizer_object=sp, bos_token='<s>', eos_token='</s>', unk_token='<unk>', padding_side='left')
llama_dir = os.path.join(OUT, 'tok_llama')
llama.save_pretrained(llama_dir)

texts = ['Hello world, LoRA!', 'The quick brown fox', ' leading space and  double', 'Ünïcödé 🤗']
bert_texts = ['Hello world!', 'unaffable loras is a test', 'Fine-tune, the xyz?', 'HELLO']
exp = {}
llama_texts = ['Hello world', 'Ünï 🤗 zq', ' two  spaces', 'LoRA adapters']
for name, tok, ts in (('gpt2', gpt2, texts), ('bert', bert, bert_texts), ('llama', llama, llama_texts)):
    e = {'vocabSize': len(tok), 'paddingSide': tok.padding_side, 'single': [], 'batch': {}}
    for t in ts:
        with_sp = tok(t)['input_ids']
        no_sp = tok(t, add_special_tokens=False)['input_ids']
        e['single'].append({'text': t, 'ids': with_sp, 'idsNoSpecial': no_sp,
                            'decoded': tok.decode(with_sp, skip_special_tokens=False),
                            'decodedSkip': tok.decode(with_sp, skip_special_tokens=True)})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    for side in ('right', 'left'):
        tok.padding_side = side
        b = tok(ts, padding='longest')
        e['batch'][f'longest_{side}'] = {'inputIds': b['input_ids'], 'attentionMask': b['attention_mask']}
    tok.padding_side = 'right'
    b = tok(ts, padding='max_length', truncation=True, max_length=6)
    e['batch']['max_length_6_trunc'] = {'inputIds': b['input_ids'], 'attentionMask': b['attention_mask']}
    b = tok(ts, truncation=True, max_length=5)
    e['batch']['trunc_5'] = {'inputIds': b['input_ids'], 'attentionMask': b['attention_mask']}
    if name == 'bert':
        b = tok(ts[:2], ['a test', 'hello'], padding='longest')
        e['batch']['pair_longest'] = {'inputIds': b['input_ids'], 'attentionMask': b['attention_mask']}
        b = tok(ts[:2], ['a test', 'hello the world is a test'], truncation=True, max_length=9)
        e['batch']['pair_trunc_9'] = {'inputIds': b['input_ids'], 'attentionMask': b['attention_mask']}
    exp[name] = e
exp['gpt2']['chat'] = gpt2.apply_chat_template([{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'yo'}], tokenize=False)
json.dump(exp, open(os.path.join(OUT, 'tokenizer_expected.json'), 'w'), ensure_ascii=False)
print('ok')

# --- config.json of each architecture, with the values transformers exposes ---
from transformers import (GPT2Config, BertConfig, RobertaConfig, DistilBertConfig, LlamaConfig,
                          MistralConfig, Qwen2Config)
cdir = os.path.join(OUT, 'configs')
os.makedirs(cdir)
cfgs = {
    'gpt2': GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=300),
    'bert': BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                       max_position_embeddings=40, vocab_size=50, id2label={0: 'neg', 1: 'pos', 2: 'neutral'}),
    'roberta': RobertaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=70, num_labels=4),
    'distilbert': DistilBertConfig(dim=24, n_layers=3, n_heads=3, hidden_dim=48, vocab_size=80, max_position_embeddings=32),
    'llama': LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=128, max_position_embeddings=256),
    'mistral': MistralConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                             intermediate_size=64, vocab_size=128, max_position_embeddings=512),
    'qwen2': Qwen2Config(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=151, max_position_embeddings=128),
}
cexp = {}
for k, c in cfgs.items():
    d = os.path.join(cdir, k)
    c.save_pretrained(d)
    cexp[k] = {'modelType': c.model_type, 'vocabSize': c.vocab_size, 'hiddenSize': c.hidden_size,
               'numLayers': c.num_hidden_layers, 'numHeads': c.num_attention_heads,
               'maxPositions': c.max_position_embeddings, 'numLabels': c.num_labels}
json.dump(cexp, open(os.path.join(OUT, 'configs_expected.json'), 'w'), indent=1)
print('configs ok')
