"""The Python examples of README.md, docs/models.md and docs/clip.md run as written.

Each ```python block is executed in a folder holding the files the examples name
(``gspn2_tiny.pth``: an image tower written by ``convert_clip_to_backbone``, i.e. headless).
A block that is an mmseg config fragment (it sets ``custom_imports``) is executed, then its
backbone is built and initialised.
"""
import logging
import re
from pathlib import Path

import pytest
import timm
import torch

import gspn2_dense  # noqa: F401
from gspn2_dense.clip.checkpoint import convert_clip_to_backbone

ROOT = Path(__file__).resolve().parents[1]
DOCS = ('README.md', 'docs/models.md', 'docs/clip.md')


def _blocks(doc):
    text = (ROOT / doc).read_text(encoding='utf-8')
    return re.findall(r'^```python\n(.*?)^```', text, flags=re.S | re.M)


SNIPPETS = [(doc, i, code) for doc in DOCS for i, code in enumerate(_blocks(doc))]


@pytest.fixture(scope='module')
def tower(tmp_path_factory):
    """A folder with ``gspn2_tiny.pth`` converted from a (fake) CLIP checkpoint; the trunk's state."""
    folder = tmp_path_factory.mktemp('docs')
    torch.manual_seed(0)
    trunk = timm.create_model('gspn2_tiny', num_classes=0)
    clip = {f'module.visual.trunk.{k}': v for k, v in trunk.state_dict().items()}
    clip.update({'module.visual.head.proj.weight': torch.zeros(8, 640),
                 'module.logit_scale': torch.zeros(())})
    torch.save({'epoch': 1, 'state_dict': clip}, folder / 'epoch_1.pt')
    convert_clip_to_backbone(str(folder / 'epoch_1.pt'), str(folder / 'gspn2_tiny.pth'))
    return folder, trunk.state_dict()


@pytest.fixture
def tower_file(tower, monkeypatch):
    """Run the test in the folder of ``gspn2_tiny.pth``; the trunk state it holds."""
    folder, state = tower
    monkeypatch.chdir(folder)
    return state


def test_every_doc_has_its_examples():
    assert {doc for doc, _, _ in SNIPPETS} == set(DOCS)


@pytest.mark.parametrize('doc, index, code', SNIPPETS,
                         ids=[f'{doc}[{i}]' for doc, i, _ in SNIPPETS])
def test_snippet_runs(doc, index, code, tower_file):
    namespace = {}
    exec(compile(code, f'{doc} block {index}', 'exec'), namespace)
    if 'custom_imports' in namespace:  # an mmseg config fragment: build what it describes
        from mmseg.registry import MODELS
        backbone = MODELS.build(namespace['model']['backbone'])
        backbone.init_weights()
        for key, value in backbone.trunk.state_dict().items():
            assert torch.equal(value, tower_file[key]), key


def test_documented_local_weights_call_loads_a_headless_tower(tower_file, caplog):
    """docs/models.md: ``pretrained=True, pretrained_cfg_overlay=dict(file=...)`` on a converted
    tower loads the trunk and keeps the initialised classifier, saying so."""
    code = next(code for doc, _, code in SNIPPETS if doc == 'docs/models.md'
                and 'pretrained_cfg_overlay' in code)
    namespace = {}
    with caplog.at_level(logging.INFO, logger='gspn2_dense.models.gspn2'):
        exec(code, namespace)
    model = namespace['model']
    state = model.state_dict()
    for key, value in tower_file.items():
        assert torch.equal(state[key], value), key
    assert state['head.fc.weight'].shape == (1000, 640) and state['head.fc.weight'].std() > 0
    assert any('checkpoint has no classifier (head.fc.*' in r.getMessage()
               and 'keeps its initialisation' in r.getMessage() for r in caplog.records)


def test_a_checkpoint_with_a_head_still_loads_it(tmp_path):
    source = timm.create_model('gspn2_test', num_classes=10)
    torch.save(source.state_dict(), tmp_path / 'classifier.pth')
    model = timm.create_model('gspn2_test', num_classes=10, pretrained=True,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / 'classifier.pth'),
                                                          num_classes=10))
    assert torch.equal(model.head.fc.weight, source.head.fc.weight)
