// peft-ts generate: text continuation of a prompt, streamed to stdout, with or without an adapter.
import { tensor } from '../../tensor/index.js';
import { generateAsync } from '../../generate/generate.js';
import { TextStreamer } from '../../generate/streamer.js';
import { UsageError, bool, num, str } from '../args.js';
import { Flags, checkKnown, commandFlags, loadWithAdapter } from '../common.js';

export const GENERATE_HELP = `peft-ts generate: continue a prompt (streams to stdout)

  --prompt "..."              the prompt                                              [required]
  --adapter DIR               LoRA adapter (causal-lm or seq2seq-lm) to apply; without it, the base model
                              (a T5 / BART model encodes the prompt and prints the decoder's text)
  --model DIR|ID              base model (default: the adapter's base_model_name_or_path, else assets/default-model)
  --revision REV  --adapter-revision REV   Hub branch, tag or commit of --model / --adapter
  --max-new-tokens N (40)     --greedy (default) | --do-sample
  --num-beams N (1)           beam search with N beams (the best beam is printed, not streamed)
  --temperature X  --top-k N  --top-p X  --no-repeat-ngram-size N  --repetition-penalty X
  --seed N (0)                sampling seed (same seed, same text)
  --no-stream                 print the text once at the end instead of streaming
  --skip-prompt               do not echo the prompt
  --dtype float32|bfloat16   base weights in bf16 (half the memory; compute stays float32)`;

const KNOWN = ['prompt', 'adapter', 'model', 'maxNewTokens', 'numBeams', 'greedy', 'doSample', 'temperature', 'topK', 'topP', 'noRepeatNgramSize', 'repetitionPenalty', 'seed', 'stream', 'skipPrompt', 'task', 'loadIn4bit', 'dtype', 'revision', 'adapterRevision'];

export async function generateCommand(argv: string[]): Promise<void> {
  const flags: Flags = commandFlags(argv, ['help', 'greedy', 'doSample', 'stream', 'skipPrompt', 'loadIn4bit']);
  if (flags.help) { console.log(GENERATE_HELP); return; }
  checkKnown(flags, KNOWN, 'generate');
  const prompt = str(flags, 'prompt');
  if (prompt === undefined) throw new UsageError('generate: --prompt is required');
  if (bool(flags, 'greedy') && bool(flags, 'doSample')) throw new UsageError('generate: --greedy and --do-sample exclude each other');
  const { model, task, tokenizer } = await loadWithAdapter(flags, 'causal-lm');
  if (task !== 'causal-lm' && task !== 'seq2seq-lm') throw new UsageError(`generate: the adapter is for ${task}; generation needs a causal-lm or seq2seq-lm adapter`);
  const ids = tokenizer.encode(prompt);
  // An encoder-decoder's output starts with its decoder start token, not the prompt.
  const promptLen = task === 'seq2seq-lm' ? 1 : ids.length;
  if (!ids.length) throw new UsageError('generate: the prompt encodes to no tokens');
  const numBeams = num(flags, 'numBeams', 1)!;
  if (!Number.isInteger(numBeams) || numBeams < 1) throw new UsageError(`generate: --num-beams must be a positive integer, got ${numBeams}`);
  if (numBeams > 1 && bool(flags, 'doSample')) throw new UsageError('generate: --num-beams > 1 is beam search; it cannot be combined with --do-sample');
  // Beam search only knows its best sequence at the end: it is printed then, not streamed.
  const stream = bool(flags, 'stream', true) && numBeams === 1;
  let text = '';
  const streamer = new TextStreamer(tokenizer, { skipPrompt: bool(flags, 'skipPrompt'), skipSpecialTokens: true, write: stream ? (s) => { process.stdout.write(s); } : (s) => { text += s; } });
  const out = await generateAsync(model, tensor(Int32Array.from(ids), [1, ids.length]), {
    maxNewTokens: num(flags, 'maxNewTokens', 40), doSample: bool(flags, 'doSample'), numBeams,
    temperature: num(flags, 'temperature'), topK: num(flags, 'topK'), topP: num(flags, 'topP'),
    noRepeatNgramSize: num(flags, 'noRepeatNgramSize'), repetitionPenalty: num(flags, 'repetitionPenalty'),
    seed: num(flags, 'seed', 0), eosTokenId: tokenizer.eosTokenId, padTokenId: tokenizer.padTokenId,
    streamer: numBeams === 1 ? streamer : undefined,
  });
  if (numBeams > 1) {
    // The same text the streamer would have written: the row up to its first eos.
    let row = Array.from(out.ints);
    const eos = tokenizer.eosTokenId;
    const stop = eos === null ? -1 : row.findIndex((x, j) => j >= promptLen && x === eos);
    if (stop >= 0) row = row.slice(0, stop + 1);
    text = tokenizer.decode(bool(flags, 'skipPrompt') ? row.slice(promptLen) : row, { skipSpecialTokens: true });
  }
  process.stdout.write(stream ? '\n' : text + '\n');
}
