// peft-ts generate: text continuation of a prompt, streamed to stdout, with or without an adapter.
import { tensor } from '../../tensor/index.js';
import { generateAsync } from '../../generate/generate.js';
import { TextStreamer } from '../../generate/streamer.js';
import { type CommandDef, UsageError, flag, helpText, int, num, oneOf, parseCommand, str } from '../args.js';
import { ADAPTER_REVISION, BASE_FROM_ADAPTER, MODEL, TASKS } from '../options.js';
import { loadWithAdapter } from '../common.js';

const G = 'Generation';
const GENERATE_OPTIONS = {
  prompt: str('the prompt (a value starting with "-" is written --prompt="-...")', { metavar: '"..."', required: true }),
  adapter: str('LoRA adapter (causal-lm or seq2seq-lm) to apply, a folder or Hub id; without it, the base model (a T5 / BART model encodes the prompt and prints the decoder text)', { metavar: 'DIR|ID' }),
  ...ADAPTER_REVISION,
  ...MODEL,
  model: { ...MODEL.model, defaultText: BASE_FROM_ADAPTER },
  task: oneOf(TASKS, 'the adapter task (generation needs causal-lm or seq2seq-lm)'),
  'max-new-tokens': int('tokens to generate', { min: 1, max: 1 << 20, default: 40, group: G }),
  greedy: flag('greedy decoding (the default)', { group: G }),
  'do-sample': flag('sample instead of greedy', { group: G }),
  'num-beams': int('beam search with N beams (the best beam is printed, not streamed)', { min: 1, max: 1024, default: 1, group: G }),
  temperature: num('sampling temperature', { gt: 0, max: 1e6, group: G }),
  'top-k': int('keep the K most likely tokens (0: all)', { min: 0, group: G }),
  'top-p': num('nucleus sampling: keep the smallest set of tokens with probability >= P', { gt: 0, max: 1, group: G }),
  'no-repeat-ngram-size': int('never repeat an n-gram of this size (0: off)', { min: 0, group: G }),
  'repetition-penalty': num('penalty on tokens already present (1: none)', { gt: 0, max: 1e6, group: G }),
  bf16: flag("mixed precision, as torch.autocast bfloat16: the GEMMs take bf16-rounded activations (faster with --dtype bfloat16 weights)", { group: G }),
  seed: int('sampling seed (same seed, same text)', { min: 0, max: 2 ** 32 - 1, default: 0, group: G }),
  stream: flag('stream the text as it is generated', { default: true }),
  'skip-prompt': flag('do not echo the prompt'),
} as const;

export const GENERATE: CommandDef<typeof GENERATE_OPTIONS> = { name: 'generate', summary: 'continue a prompt (streams to stdout)', options: GENERATE_OPTIONS };

export async function generateCommand(argv: string[]): Promise<void> {
  const o = parseCommand(GENERATE, argv);
  if (o.help) { console.log(helpText(GENERATE)); return; }
  const prompt = o.prompt;
  if (o.greedy && o.doSample) throw new UsageError('generate: --greedy and --do-sample exclude each other');
  const numBeams = o.numBeams;
  if (numBeams > 1 && o.doSample) throw new UsageError('generate: --num-beams > 1 is beam search; it cannot be combined with --do-sample');
  const { model, task, tokenizer } = await loadWithAdapter(o, 'causal-lm');
  if (task !== 'causal-lm' && task !== 'seq2seq-lm') throw new UsageError(`generate: the adapter is for ${task}; generation needs a causal-lm or seq2seq-lm adapter`);
  const ids = tokenizer.encode(prompt);
  // An encoder-decoder's output starts with its decoder start token, not the prompt.
  const promptLen = task === 'seq2seq-lm' ? 1 : ids.length;
  if (!ids.length) throw new UsageError('generate: the prompt encodes to no tokens');
  // Beam search only knows its best sequence at the end: it is printed then, not streamed.
  const stream = o.stream && numBeams === 1;
  let text = '';
  const streamer = new TextStreamer(tokenizer, { skipPrompt: o.skipPrompt, skipSpecialTokens: true, write: stream ? (s) => { process.stdout.write(s); } : (s) => { text += s; } });
  const out = await generateAsync(model, tensor(Int32Array.from(ids), [1, ids.length]), {
    maxNewTokens: o.maxNewTokens, doSample: o.doSample, numBeams,
    temperature: o.temperature, topK: o.topK, topP: o.topP,
    noRepeatNgramSize: o.noRepeatNgramSize, repetitionPenalty: o.repetitionPenalty,
    seed: o.seed, eosTokenId: tokenizer.eosTokenId, padTokenId: tokenizer.padTokenId,
    streamer: numBeams === 1 ? streamer : undefined,
    autocast: o.bf16 ? 'bfloat16' : null,
  });
  if (numBeams > 1) {
    // The same text the streamer would have written: the row up to its first eos.
    let row = Array.from(out.ints);
    const eos = tokenizer.eosTokenId;
    const stop = eos === null ? -1 : row.findIndex((x, j) => j >= promptLen && x === eos);
    if (stop >= 0) row = row.slice(0, stop + 1);
    text = tokenizer.decode(o.skipPrompt ? row.slice(promptLen) : row, { skipSpecialTokens: true });
  }
  process.stdout.write(stream ? '\n' : text + '\n');
}
