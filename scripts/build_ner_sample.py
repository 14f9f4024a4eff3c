"""Writes assets/data/ner_sample_{train,test}.jsonl: a tiny, synthetic named-entity data set in
Hugging Face datasets' NER layout ({"tokens": [...], "ner_tags": [...]}, BIO tags PER / LOC),
built from King James Bible style templates. For trying `peft-ts train --task token-cls`;
deterministic. Run: python3 scripts/build_ner_sample.py"""
import json, os, random

PEOPLE = ['Moses', 'Aaron', 'David', 'Paul', 'Peter', 'Abraham', 'Isaac', 'Jacob', 'Joseph', 'Samuel',
          'Solomon', 'Elijah', 'Simon Peter', 'Mary Magdalene', 'John', 'Joshua']
PLACES = ['Egypt', 'Jerusalem', 'Galilee', 'Bethlehem', 'Jericho', 'Babylon', 'Nazareth', 'Samaria',
          'mount Sinai', 'the land of Canaan', 'Damascus', 'Bethel']
TEMPLATES = [
    '{p} went up to {l} .', 'And {p} came unto {l} , and abode there .', '{p} spake unto {q} in {l} .',
    'Then {p} departed from {l} .', 'And it came to pass that {p} dwelt in {l} .', '{p} sent messengers to {l} .',
    'And {p} and {q} went down into {l} .', 'In those days {p} was in {l} .', 'And {p} said unto {q} , Arise .',
]


def tag_span(words, kind):
    # "the land of Canaan": only the name is the entity; "mount Sinai" is one place.
    if words[:3] == ['the', 'land', 'of']:
        return ['O', 'O', 'O'] + tag_span(words[3:], kind)
    return ['B-' + kind] + ['I-' + kind] * (len(words) - 1)


def sentence(rng):
    t = rng.choice(TEMPLATES)
    p, q = rng.sample(PEOPLE, 2)
    l = rng.choice(PLACES)
    tokens, tags = [], []
    for piece in t.split(' '):
        if piece in ('{p}', '{q}', '{l}'):
            ws = {'{p}': p, '{q}': q, '{l}': l}[piece].split(' ')
            tokens += ws
            tags += tag_span(ws, 'LOC' if piece == '{l}' else 'PER')
        else:
            tokens.append(piece)
            tags.append('O')
    return {'tokens': tokens, 'ner_tags': tags}


rng = random.Random(7)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'assets', 'data')
for name, n in (('train', 48), ('test', 16)):
    with open(os.path.join(out, f'ner_sample_{name}.jsonl'), 'w') as f:
        for _ in range(n):
            f.write(json.dumps(sentence(rng)) + '\n')
