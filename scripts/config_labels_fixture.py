# How transformers resolves num_labels / id2label / label2id from config.json, and with a
# from_pretrained(num_labels=N) override: writes test/fixtures/config/labels.json.
# Run: /opt/pyref/bin/python scripts/config_labels_fixture.py
import json, os, logging
import transformers
from transformers import BertConfig

transformers.logging.set_verbosity_error()  # the "incompatible num_labels" warning is expected here
BASE = dict(model_type='bert', vocab_size=10, hidden_size=4, num_hidden_layers=1, num_attention_heads=1,
            max_position_embeddings=8, intermediate_size=8)
NER = {'0': 'O', '1': 'B-PER', '2': 'I-PER'}
CASES = {
    'none': {},
    'num_labels_only': {'num_labels': 3},
    'id2label_only': {'id2label': NER},
    'both_agree': {'num_labels': 3, 'id2label': NER},
    'both_disagree': {'num_labels': 5, 'id2label': NER},
    'label2id_only': {'label2id': {'O': 0, 'B-PER': 1, 'I-PER': 2}},
    'num_labels_and_label2id': {'num_labels': 3, 'label2id': {'O': 0, 'B-PER': 1, 'I-PER': 2}},
    'id2label_and_label2id': {'id2label': NER, 'label2id': {'O': 0, 'B-PER': 1, 'I-PER': 2}},
    'id2label_unordered': {'id2label': {'1': 'b', '0': 'a', '2': 'c'}},
}


def view(c):
    return {'numLabels': c.num_labels, 'id2label': {str(k): v for k, v in c.id2label.items()}, 'label2id': c.label2id}


out = {'transformers': transformers.__version__, 'cases': {}}
for name, extra in CASES.items():
    d = dict(BASE, **extra)
    out['cases'][name] = {
        'config': d,
        'expected': view(BertConfig.from_dict(dict(d))),
        'override': {str(n): view(BertConfig.from_dict(dict(d), num_labels=n)) for n in (3, 4)},
    }
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, '..', 'test', 'fixtures', 'config', 'labels.json'), 'w') as f:
    json.dump(out, f, indent=1)
    f.write('\n')
