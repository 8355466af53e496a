"""The variant table is the one place a variant is spelled: everything else agrees with it.

The package reads the table (timm entry points, mmseg ``ARCHS``, the probe's ``ARCHS``, open_clip's
``MODEL_NAMES``); the files that cannot (open_clip JSON, mmengine configs, docs/models.md) are
checked against it here, with messages naming the file and the field.
"""
import json
import re
from pathlib import Path

import pytest
import timm
import torch
from mmengine.config import Config

import gspn2_dense  # noqa: F401  (registers the timm models and the mmseg backbone)
from gspn2_dense.engine import probe
from gspn2_dense.clip import MODEL_CONFIG_DIR, MODEL_NAMES
from gspn2_dense.models.backbones import ARCHS, GSPN2Backbone
from gspn2_dense.models.variants import PAPER_VARIANTS, VARIANTS, Variant, get_variant

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
CLIP_SCRIPTS = sorted((CONFIG_DIR / 'clip').glob('*.sh'))
CLIP_JSONS = sorted(MODEL_CONFIG_DIR.glob('*.json'))
NAME_PART = re.compile(r'_gspn2-([a-z]+)')  # the backbone part of a config name: ..._gspn2-t_...
TIMM_NAME = re.compile(r'gspn2_[a-z]+')


def _spellings(variant: Variant):
    return {variant.name, variant.arch, variant.short} | ({variant.clip} if variant.clip else set())


# ----- the table itself -----

def test_no_spelling_names_two_variants():
    owner = {}
    for variant in VARIANTS.values():
        for spelling in _spellings(variant):
            assert owner.setdefault(spelling, variant.name) == variant.name, \
                f'{spelling!r} names both {owner[spelling]} and {variant.name}'


@pytest.mark.parametrize('variant', VARIANTS.values(), ids=lambda v: v.name)
def test_every_spelling_finds_its_variant(variant):
    assert VARIANTS[variant.name] is variant and variant.name == f'gspn2_{variant.arch}'
    assert len(variant.depths) == len(variant.dims) == 4
    assert all(d >= 1 for d in variant.depths) and all(c % 4 == 0 for c in variant.dims)
    for spelling in _spellings(variant):
        assert get_variant(spelling) is variant


def test_unknown_variant():
    with pytest.raises(ValueError, match=r"unknown GSPN-2 variant 'huge'; known: timm names \['gspn2_test', "):
        get_variant('huge')


def test_paper_variants_are_t_s_b():
    assert [(v.short, v.clip) for v in PAPER_VARIANTS] == [('t', 'GSPN2-T'), ('s', 'GSPN2-S'), ('b', 'GSPN2-B')]
    assert [v.paper.top1 for v in PAPER_VARIANTS] == [83.0, 84.4, 84.6]


# ----- what the package derives from it -----

def test_timm_registers_exactly_the_table():
    assert timm.list_models('gspn2_*') == sorted(VARIANTS)


@pytest.mark.parametrize('variant', VARIANTS.values(), ids=lambda v: v.name)
def test_timm_model_has_the_rows_sizes(variant):
    with torch.device('meta'):
        model = timm.create_model(variant.name)
    assert [info['num_chs'] for info in model.feature_info] == list(variant.dims)
    assert [len(stage.blocks) for stage in model.stages] == list(variant.depths)
    cfg = model.pretrained_cfg
    assert (cfg['architecture'], cfg['input_size']) == (variant.name, (3, variant.img_size, variant.img_size))
    with torch.device('meta'):
        backbone = GSPN2Backbone(arch=variant.arch)
    assert backbone.num_features == list(variant.dims)


def test_derived_name_lists():
    assert ARCHS == ('test', 'nano', 'tiny', 'small', 'base')
    assert probe.ARCHS == ('t', 's', 'b')
    assert MODEL_NAMES == tuple(v.clip for v in VARIANTS.values() if v.clip)


# ----- files checked against it -----

def clip_json_mismatches(path: Path):
    """What is wrong with one open_clip model config, in messages naming the file and the field."""
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    owners = [v for v in VARIANTS.values() if v.clip == path.stem]
    if not owners:
        return [f'{where}: no variant of gspn2_dense/models/variants.py has clip={path.stem!r}']
    timm_name = json.loads(path.read_text()).get('vision_cfg', {}).get('timm_model_name')
    if timm_name != owners[0].name:
        return [f'{where}: vision_cfg.timm_model_name is {timm_name!r}, but the variant table gives '
                f'{path.stem} the image tower {owners[0].name!r}']
    return []


@pytest.mark.parametrize('path', CLIP_JSONS, ids=lambda p: p.stem)
def test_open_clip_config_matches_the_table(path):
    problems = clip_json_mismatches(path)
    assert not problems, '\n'.join(problems)


def test_every_open_clip_name_has_a_config():
    assert sorted(v.clip for v in VARIANTS.values() if v.clip) == [p.stem for p in CLIP_JSONS]


def test_open_clip_check_names_the_file_and_field(tmp_path):
    bad = tmp_path / 'GSPN2-S.json'
    bad.write_text(json.dumps(dict(vision_cfg=dict(timm_model_name='gspn2_tiny'))))
    assert clip_json_mismatches(bad) == [
        f"{bad}: vision_cfg.timm_model_name is 'gspn2_tiny', but the variant table gives GSPN2-S the image "
        f"tower 'gspn2_small'"]
    assert 'no variant' in clip_json_mismatches(tmp_path / 'GSPN2-L.json')[0]


def _channels_read(model: dict):
    """(field, in_channels, in_index) of the module that reads the backbone's maps, if any."""
    for key in ('decoder', 'decode_head', 'head_defaults'):
        if key in model and 'in_channels' in model[key]:
            return f'model.{key}', model[key]['in_channels'], model[key].get('in_index')
    return None


def config_mismatches(path: Path):
    """What in one mmengine config disagrees with the variant table, naming the file and the field."""
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    cfg = Config.fromfile(str(path))
    backbone = cfg.get('model', {}).get('backbone', {})
    if backbone.get('type') != 'GSPN2':
        return []
    named = NAME_PART.search(path.stem)
    if named is None:
        return [f'{where}: a GSPN2 backbone, but the file name has no _gspn2-{{short}} part']
    try:
        variant = get_variant(backbone.get('arch', 'tiny'))
    except ValueError as e:
        return [f'{where}: model.backbone.arch: {e}']
    problems = []
    if named.group(1) != variant.short:
        problems.append(f'{where}: model.backbone.arch is {variant.arch!r} ({variant.name}), but the file name '
                        f'says gspn2-{named.group(1)}; the variant table spells {variant.name} gspn2-{variant.short}')
    checkpoint = (backbone.get('init_cfg') or {}).get('checkpoint')
    ckpt_name = TIMM_NAME.search(Path(checkpoint).name) if checkpoint else None
    if ckpt_name and ckpt_name.group(0) != variant.name:
        problems.append(f'{where}: model.backbone.init_cfg.checkpoint {checkpoint!r} names {ckpt_name.group(0)}, '
                        f'but model.backbone.arch {variant.arch!r} is {variant.name}')
    read = _channels_read(cfg.model)
    if read is not None:
        field, in_channels, in_index = read
        dims = tuple(backbone.get('dims') or variant.dims)
        out_indices = tuple(backbone.get('out_indices', (0, 1, 2, 3)))
        if in_index is None:
            expected = [dims[i] for i in out_indices]
        elif isinstance(in_index, int):
            expected = dims[out_indices[in_index]]
        else:
            expected = [dims[out_indices[i]] for i in in_index]
        if (list(in_channels) if isinstance(in_channels, (list, tuple)) else in_channels) != expected:
            problems.append(f'{where}: {field}.in_channels is {in_channels!r}, but {variant.name} (dims {dims}) '
                            f'gives {expected!r} at out_indices {out_indices}, in_index {in_index!r}')
    return problems


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_config_matches_the_table(path):
    problems = config_mismatches(path)
    assert not problems, '\n'.join(problems)


def test_config_check_names_the_file_and_field(tmp_path):
    base = CONFIG_DIR / 'linear_probe' / 'linear_gspn2-t_8xb2-40k_ade20k-512x512.py'
    bad = tmp_path / 'linear_gspn2-s_8xb2-40k_ade20k-512x512.py'
    bad.write_text(f"_base_ = {str(base)!r}\nmodel = dict(decode_head=dict(in_channels=768))\n")
    assert config_mismatches(bad) == [
        f"{bad}: model.backbone.arch is 'tiny' (gspn2_tiny), but the file name says gspn2-s; the variant "
        f"table spells gspn2_tiny gspn2-t",
        f"{bad}: model.decode_head.in_channels is 768, but gspn2_tiny (dims (80, 160, 320, 640)) gives 640 at "
        f"out_indices (0, 1, 2, 3), in_index 3"]
    bad.write_text(f"_base_ = {str(base)!r}\n"
                   "model = dict(backbone=dict(init_cfg=dict(checkpoint='ckpts/gspn2_base_clip.pth')))\n")
    assert config_mismatches(bad)[1] == (
        f"{bad}: model.backbone.init_cfg.checkpoint 'ckpts/gspn2_base_clip.pth' names gspn2_base, but "
        f"model.backbone.arch 'tiny' is gspn2_tiny")


@pytest.mark.parametrize('path', CLIP_SCRIPTS, ids=lambda p: p.stem)
def test_clip_script_matches_the_table(path):
    short = NAME_PART.search(path.stem).group(1)
    model = re.search(r'^MODEL=\$\{MODEL:-([^}]+)\}', path.read_text(), re.M).group(1)
    assert get_variant(short).clip == model, (
        f'{path.relative_to(REPO)}: MODEL defaults to {model}, but the file name says gspn2-{short}, '
        f'whose open_clip model is {get_variant(short).clip}')


def _docs_row(variant: Variant) -> str:
    paper = variant.paper
    figures = f'{paper.top1} / {paper.params / 1e6:g}M / {paper.macs / 1e9:g}G' if paper else '-'
    return (f'| `{variant.name}` | `{variant.arch}` | `gspn2-{variant.short}` | '
            f'{f"`{variant.clip}`" if variant.clip else "-"} | {", ".join(map(str, variant.dims))} | '
            f'{", ".join(map(str, variant.depths))} | {figures} |')


def test_docs_variant_table_matches():
    rows = [line for line in (REPO / 'docs' / 'models.md').read_text().splitlines()
            if re.match(r'\| `gspn2_[a-z]+` \| `', line)]
    assert [row.split('`')[1] for row in rows] == list(VARIANTS), rows
    for row, variant in zip(rows, VARIANTS.values()):
        assert row == _docs_row(variant), f'docs/models.md: the row of {variant.name} should read\n{_docs_row(variant)}'
