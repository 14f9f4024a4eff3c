// README.md model cards as the Hub reads them: a YAML metadata block (base_model,
// library_name, tags, pipeline_tag...) then markdown, as huggingface_hub's ModelCard writes.
export type CardMeta = Record<string, string | string[] | null | undefined>;

// Plain YAML scalars where safe, else a double-quoted (JSON) string, which YAML also reads.
function scalar(v: string): string {
  return /^[A-Za-z0-9_./][\w ./:@+-]*$/.test(v) && !/: |:$| #/.test(v) && !/^(true|false|null|yes|no|on|off|~|[-+]?[\d.]+)$/i.test(v) ? v : JSON.stringify(v);
}

/** The card text: metadata keys in sorted order (as ModelCardData.to_yaml), null/empty ones left out. */
export function modelCard(meta: CardMeta, body: string): string {
  const lines = ['---'];
  for (const k of Object.keys(meta).sort()) {
    const v = meta[k];
    if (v === null || v === undefined || (Array.isArray(v) && !v.length)) continue;
    if (Array.isArray(v)) lines.push(`${k}:`, ...[...v].map((x) => `- ${scalar(x)}`));
    else lines.push(`${k}: ${scalar(v)}`);
  }
  lines.push('---', '', body.trim(), '');
  return lines.join('\n');
}

/** peft's model-card metadata for an adapter of base model `base` (tags as create_or_update_model_card adds them). */
export function adapterCardMeta(base: string | null, task: string | null): CardMeta {
  return {
    base_model: base,
    library_name: 'peft',
    pipeline_tag: task === 'CAUSAL_LM' ? 'text-generation' : null,
    tags: [...(base ? [`base_model:adapter:${base}`] : []), 'lora', 'peft-ts', 'transformers'].sort(),
  };
}
