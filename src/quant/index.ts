export * from './nf4.js';
export * from './serialize.js';
export * from './linear4bit.js';
export * from './model.js';
export * from './load.js';
