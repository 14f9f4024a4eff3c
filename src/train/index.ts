export * from './optim.js';
export * from './schedulers.js';
export * from './args.js';
export * from './callbacks.js';
export * from './checkpoint.js';
export * from './metrics.js';
export * from './curves.js';
export * from './trainer.js';
