import dataclasses
import json

import open_clip
import pytest
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from open_clip.timm_model import TimmModel

from gspn2_dense.clip import MODEL_CONFIG_DIR, MODEL_NAMES, register_model_configs
from gspn2_dense.models import GSPN2
from gspn2_dense.models.variants import PAPER_VARIANTS

CONFIG_FILES = sorted(MODEL_CONFIG_DIR.glob('*.json'))


def test_list_models_shows_every_config():
    assert set(MODEL_NAMES) == {'GSPN2-T', 'GSPN2-S', 'GSPN2-B', 'GSPN2-N-demo', 'GSPN2-test'}
    assert set(MODEL_NAMES) <= set(open_clip.list_models())
    assert sorted(MODEL_NAMES) == [p.stem for p in CONFIG_FILES]


def test_registration_is_idempotent():
    from open_clip.factory import _MODEL_CONFIG_PATHS
    register_model_configs()
    register_model_configs()
    assert list(_MODEL_CONFIG_PATHS).count(MODEL_CONFIG_DIR) == 1


@pytest.mark.parametrize('path', CONFIG_FILES, ids=lambda p: p.stem)
def test_configs_use_only_keys_open_clip_accepts(path):
    cfg = json.loads(path.read_text())
    assert set(cfg) <= {'embed_dim', 'vision_cfg', 'text_cfg'}
    assert set(cfg['vision_cfg']) <= {f.name for f in dataclasses.fields(CLIPVisionCfg)}
    assert set(cfg['text_cfg']) <= {f.name for f in dataclasses.fields(CLIPTextCfg)}
    assert cfg['vision_cfg']['timm_pool'] == 'avg' and cfg['vision_cfg']['timm_proj'] == 'linear'


@pytest.mark.parametrize('variant', PAPER_VARIANTS, ids=lambda v: v.clip)
def test_public_configs_use_the_standard_text_tower(variant):
    cfg = open_clip.get_model_config(variant.clip)
    assert cfg['embed_dim'] == 512
    assert cfg['vision_cfg']['timm_model_name'] == variant.name
    assert cfg['vision_cfg']['image_size'] == 224
    text = cfg['text_cfg']
    assert (text['layers'], text['width'], text['context_length']) == (12, 512, 77)


def test_create_gspn2_t_and_encode():
    model, _, preprocess = open_clip.create_model_and_transforms('GSPN2-T')
    assert isinstance(model.visual, TimmModel) and isinstance(model.visual.trunk, GSPN2)
    assert len(model.transformer.resblocks) == 12 and model.transformer.width == 512
    tokenizer = open_clip.get_tokenizer('GSPN2-T')
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    model.eval()
    with torch.no_grad():
        image = model.encode_image(torch.randn(1, 3, 64, 64), normalize=True)
        text = model.encode_text(tokenizer(['a photo of a dog.']), normalize=True)
    assert image.shape == text.shape == (1, 512)
    assert torch.allclose(image.norm(dim=-1), torch.ones(1))
