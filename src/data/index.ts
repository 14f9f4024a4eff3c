export * from './dataset.js';
export * from './csv.js';
export * from './tokenizer.js';
export * from './tokenize.js';
export * from './collators.js';
export * from './templates.js';
export * from './sft.js';
