"""Builds the embedded default corpus, data sets and tokenizer (assets/) reproducibly.

Source: the King James Version of the Bible (1611, public domain) as shipped by the
Debian package `bible-kjv-text` and printed by the `bible` program of `bible-kjv`:

    apt-get install -y bible-kjv
    /opt/pyref/bin/python scripts/build_default_data.py

Writes
  assets/default-model/tokenizer.json + tokenizer_config.json   byte-level BPE
  assets/data/kjv_section_{train,test}.jsonl    {"text", "label"}: which part of the Bible a verse is from
  assets/data/kjv_complete_{train,test}.jsonl   {"prompt", "completion"}: finish a verse
  $DEFAULT_CORPUS_DIR/pretrain.txt (/tmp/peft-ts-default-corpus) pretraining text, held-out verses removed
Everything is seeded; running it twice gives identical files.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, 'assets')
MODEL_DIR = os.path.join(ASSETS, 'default-model')
DATA_DIR = os.path.join(ASSETS, 'data')
# Not committed: 4 MB, and rebuilt in seconds from the Debian package.
CORPUS_DIR = os.environ.get('DEFAULT_CORPUS_DIR', '/tmp/peft-ts-default-corpus')
SEED = 1611
VOCAB_SIZE = 4096
MAX_LEN = 256
EOS = '<|endoftext|>'

BOOKS = ['Genesis', 'Exodus', 'Leviticus', 'Numbers', 'Deuteronomy', 'Joshua', 'Judges', 'Ruth',
         '1 Samuel', '2 Samuel', '1 Kings', '2 Kings', '1 Chronicles', '2 Chronicles', 'Ezra',
         'Nehemiah', 'Esther', 'Job', 'Psalms', 'Proverbs', 'Ecclesiastes', 'Song of Solomon',
         'Isaiah', 'Jeremiah', 'Lamentations', 'Ezekiel', 'Daniel', 'Hosea', 'Joel', 'Amos',
         'Obadiah', 'Jonah', 'Micah', 'Nahum', 'Habakkuk', 'Zephaniah', 'Haggai', 'Zechariah',
         'Malachi', 'Matthew', 'Mark', 'Luke', 'John', 'Acts', 'Romans', '1 Corinthians',
         '2 Corinthians', 'Galatians', 'Ephesians', 'Philippians', 'Colossians', '1 Thessalonians',
         '2 Thessalonians', '1 Timothy', '2 Timothy', 'Titus', 'Philemon', 'Hebrews', 'James',
         '1 Peter', '2 Peter', '1 John', '2 John', '3 John', 'Jude', 'Revelation']

# Four sections with clearly different vocabulary and style: the task is honest (a verse
# carries its own evidence) but not trivial for a bag of words.
SECTIONS = {
    'law': BOOKS[0:5],                       # Genesis..Deuteronomy
    'wisdom': BOOKS[17:22],                  # Job..Song of Solomon
    'gospel': BOOKS[39:43],                  # Matthew..John
    'epistle': BOOKS[44:65],                 # Romans..Jude
}
PER_CLASS_TRAIN, PER_CLASS_TEST = 800, 200
COMPLETE_TRAIN, COMPLETE_TEST = 1500, 100


def read_verses():
    """[(book, chapter, verse, text)] in canonical order, from the `bible` program."""
    exe = shutil.which('bible')
    if not exe:
        sys.exit('the `bible` program is missing: apt-get install -y bible-kjv')
    out = subprocess.run([exe, '-l100000', 'gen1:1-rev22:21'], check=True, capture_output=True,
                         text=True).stdout
    verses, book, chap = [], None, 0
    head = re.compile(r'^(.+) (\d+)$')
    line_re = re.compile(r'^\s+(\d+) (.*)$')
    for line in out.splitlines():
        if not line.strip():
            continue
        m = line_re.match(line)
        if m:
            verses.append((book, chap, int(m.group(1)), m.group(2).strip()))
            continue
        m = head.match(line)
        if not m or m.group(1) not in BOOKS:
            sys.exit(f'unexpected line from bible: {line!r}')
        book, chap = m.group(1), int(m.group(2))
    if len(verses) != 31102:
        sys.exit(f'expected 31102 verses, got {len(verses)}')
    return verses


def write_jsonl(path, rows):
    with open(path, 'w', encoding='utf-8') as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + '\n')


def build_sets(verses, rng):
    held_out = set()
    by_section = {s: [] for s in SECTIONS}
    book_section = {b: s for s, bs in SECTIONS.items() for b in bs}
    for i, (book, _c, _v, text) in enumerate(verses):
        s = book_section.get(book)
        if s and 40 <= len(text) <= 220:
            by_section[s].append(i)
    train, test = [], []
    for s, idx in by_section.items():
        pick = rng.sample(idx, PER_CLASS_TRAIN + PER_CLASS_TEST)
        for k, i in enumerate(pick):
            row = {'text': verses[i][3], 'label': s}
            (train if k < PER_CLASS_TRAIN else test).append(row)
            if k >= PER_CLASS_TRAIN:
                held_out.add(i)
    rng.shuffle(train)
    rng.shuffle(test)
    write_jsonl(os.path.join(DATA_DIR, 'kjv_section_train.jsonl'), train)
    write_jsonl(os.path.join(DATA_DIR, 'kjv_section_test.jsonl'), test)

    # Verse completion (generation demo): the first part of a verse up to a natural
    # break (comma/colon/semicolon near the middle) is the prompt, the rest the completion.
    cands = []
    for i, (book, _c, _v, text) in enumerate(verses):
        if book not in ('Psalms', 'Proverbs') or i in held_out:
            continue
        cuts = [m.end() for m in re.finditer(r'[,;:] ', text)]
        cuts = [c for c in cuts if 0.3 * len(text) <= c <= 0.7 * len(text)]
        if cuts and len(text) <= 200:
            cands.append((i, cuts[0]))
    pick = rng.sample(cands, COMPLETE_TRAIN + COMPLETE_TEST)
    rows_train, rows_test = [], []
    for k, (i, cut) in enumerate(pick):
        text = verses[i][3]
        row = {'prompt': text[:cut].rstrip(), 'completion': ' ' + text[cut:].strip()}
        if k < COMPLETE_TRAIN:
            rows_train.append(row)
        else:
            rows_test.append(row)
            held_out.add(i)
    write_jsonl(os.path.join(DATA_DIR, 'kjv_complete_train.jsonl'), rows_train)
    write_jsonl(os.path.join(DATA_DIR, 'kjv_complete_test.jsonl'), rows_test)
    return held_out


def write_corpus(verses, held_out):
    """One document per chapter, verses one per line, held-out verses dropped."""
    docs, cur, key = [], [], None
    for i, (book, chap, _v, text) in enumerate(verses):
        if (book, chap) != key and cur:
            docs.append('\n'.join(cur))
            cur = []
        key = (book, chap)
        if i not in held_out:
            cur.append(text)
    docs.append('\n'.join(cur))
    path = os.path.join(CORPUS_DIR, 'pretrain.txt')
    with open(path, 'w', encoding='utf-8') as f:
        f.write(EOS.join(docs))
    return docs


def train_tokenizer(docs):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[EOS], min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(docs, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS,
                                   unk_token=EOS, pad_token=EOS, model_max_length=MAX_LEN)
    fast.save_pretrained(MODEL_DIR)
    # Keep only what a loader needs; record the GPT-2 class name like GPT-2 checkpoints do.
    cfg_path = os.path.join(MODEL_DIR, 'tokenizer_config.json')
    with open(cfg_path) as f:
        cfg = json.load(f)
    # pad = eos, as GPT-2 fine-tuning recipes set it, so batches can be padded out of the box.
    cfg.update({'tokenizer_class': 'GPT2Tokenizer', 'add_prefix_space': False, 'model_max_length': MAX_LEN,
                'bos_token': EOS, 'eos_token': EOS, 'unk_token': EOS, 'pad_token': EOS})
    with open(cfg_path, 'w') as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write('\n')
    for extra in ('special_tokens_map.json',):
        p = os.path.join(MODEL_DIR, extra)
        if os.path.exists(p):
            os.remove(p)
    return tok


def main():
    os.makedirs(MODEL_DIR, exist_ok=True)
    os.makedirs(DATA_DIR, exist_ok=True)
    os.makedirs(CORPUS_DIR, exist_ok=True)
    rng = random.Random(SEED)
    verses = read_verses()
    held_out = build_sets(verses, rng)
    docs = write_corpus(verses, held_out)
    tok = train_tokenizer(docs)
    n_tokens = sum(len(tok.encode(d).ids) + 1 for d in docs)
    print(f'{len(verses)} verses, {len(held_out)} held out, {len(docs)} chapters, '
          f'{n_tokens} tokens with a {tok.get_vocab_size()}-token vocabulary')


if __name__ == '__main__':
    main()
