// Writes assets/tiny-bert: a tiny randomly initialised BERT encoder (2 layers, 32 wide) with
// the embedded default model's byte-level BPE tokenizer, so the token-classification (NER)
// commands of the README run with what the package ships. Random weights: it shows the
// workflow, not accuracy; use a real BERT / RoBERTa / DistilBERT checkpoint for real work.
//   node dist/scripts/make_tiny_bert.js [OUT_DIR]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AutoModelForTokenClassification } from '../src/models/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { Rng } from '../src/tensor/random.js';
import { assetPath, defaultModelPath } from '../src/io/assets.js';

const out = process.argv[2] ?? assetPath('tiny-bert');
const config = {
  architectures: ['BertModel'], model_type: 'bert', vocab_size: 4096, hidden_size: 32, num_hidden_layers: 2,
  num_attention_heads: 2, intermediate_size: 64, hidden_act: 'gelu', hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
  max_position_embeddings: 256, type_vocab_size: 2, initializer_range: 0.02, layer_norm_eps: 1e-12, pad_token_id: 0,
};
const model = AutoModelForTokenClassification.fromConfig(config, { rng: new Rng(1234) });
fs.mkdirSync(out, { recursive: true });
// The encoder only: a task head is made (and sized) by whoever fine-tunes it.
const weights = new Map([...model.checkpointStateDict()].filter(([k]) => k.startsWith('bert.')));
writeSafetensors(path.join(out, 'model.safetensors'), weights, { format: 'pt' });
fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(config, null, 2) + '\n');
for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(defaultModelPath, f), path.join(out, f));
console.log(`wrote ${out} (${[...weights.values()].reduce((a, t) => a + t.size, 0)} parameters)`);
