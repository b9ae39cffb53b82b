"""Tests of datasets/two_objects.py and datasets/render.py: the procedural Two Objects data (paper 5.2, 5.5)."""
import inspect

import numpy as np
import pytest
import torch

from mmvae_zoo.datasets import render
from mmvae_zoo.datasets.render import COLOURS, MATERIALS, SHAPES, SIZES, Objects
from mmvae_zoo.datasets.two_objects import (RELATION_THRESHOLD, RELATIONS, SINGLE_VOCAB, VOCAB, SingleObject, TwoObjects,
                                  generate)

N = 40  # five chunks of 8
SMALL = dict(image_size=32, num_train=N, num_val=12, workers=1, progress=False)
METAL_CV = 0.4  # luminance std / mean over an object: rubber below, metal above (measured: <= 0.37 vs >= 0.40)


def _arrays(data):
    return {"images": data.images, "tokens": data.tokens, **data.metadata}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture(scope="module")
def scenes():
    """60 sampled scenes rendered at 64 px with their object maps: (metadata, Rendering)."""
    fields = [TwoObjects.sample_scene(np.random.default_rng([7, 0, i]))[0] for i in range(60)]
    meta = {key: np.array([f[key] for f in fields]) for key in fields[0]}
    return meta, render.render(Objects(**{f: meta[f] for f in Objects._fields}), 64)


def test_vocabulary_is_the_papers():
    assert VOCAB.to_list() == ("small large cyan red gray blue yellow purple brown green rubber metal "
                               "sphere cylinder cube right left front behind").split()
    assert SINGLE_VOCAB.to_list() == ["small", "large", "red", "blue"]


def test_same_arrays_whatever_the_number_of_workers():
    one = generate(TwoObjects, "train", N, 32, 3, workers=1, progress=False)
    two = generate(TwoObjects, "train", N, 32, 3, workers=2, progress=False)
    _assert_same(one, two)


def test_a_scene_does_not_depend_on_its_batch_or_the_image_size():
    full = generate(TwoObjects, "val", N, 48, 0, workers=1, progress=False)
    prefix = generate(TwoObjects, "val", 13, 48, 0, workers=1, progress=False)  # chunk [8, 13) differs
    _assert_same(prefix, {key: a[:13] for key, a in full.items()})
    other_size = generate(TwoObjects, "val", N, 32, 0, workers=1, progress=False)
    for key in ("tokens", "size", "colour", "material", "shape", "position", "rotation", "first", "relation"):
        np.testing.assert_array_equal(full[key], other_size[key], err_msg=key)
    train = generate(TwoObjects, "train", N, 48, 0, workers=1, progress=False)
    assert not np.array_equal(train["tokens"], full["tokens"])


def test_texts_follow_the_grammar_and_name_the_objects(tmp_path):
    data = TwoObjects(root=tmp_path, **SMALL)
    m = data.metadata
    tables = (list(SIZES), list(COLOURS), MATERIALS, SHAPES)
    for i in range(len(data)):
        words = data.text(i).split()
        assert len(words) == 9 and words[4] in RELATIONS, words
        first = m["first"][i]
        for obj, part in ((first, words[:4]), (1 - first, words[5:])):
            attributes = [m[key][i, obj] for key in ("size", "colour", "material", "shape")]
            assert part == [table[a] for table, a in zip(tables, attributes)], (i, words)
        assert words[4] == RELATIONS[m["relation"][i]]


def test_relation_word_is_true_of_the_positions(tmp_path):
    data = TwoObjects(root=tmp_path, **SMALL)
    # the directions mean what they say on screen: right moves right, behind moves up (away)
    u0, v0 = render.project(0.0, 0.0, 0.0)
    directions = render.ground_directions()
    u, _ = render.project(*directions["right"], 0.0)
    _, v = render.project(*directions["behind"], 0.0)
    assert u > u0 and v < v0
    m = data.metadata
    for i in range(len(data)):
        first, rel = m["first"][i], RELATIONS[m["relation"][i]]
        offset = m["position"][i, first] - m["position"][i, 1 - first]
        assert offset @ directions[rel] > RELATION_THRESHOLD, (i, data.text(i))


def test_objects_are_inside_the_frame_and_apart(scenes):
    meta, rendering = scenes
    boxes = render.bounding_boxes(Objects(**{f: meta[f] for f in Objects._fields}))
    assert (boxes[..., :2] > 0).all() and (boxes[..., 2:] < 1).all()
    a, b = boxes[:, 0], boxes[:, 1]
    apart = (a[:, 2] < b[:, 0]) | (b[:, 2] < a[:, 0]) | (a[:, 3] < b[:, 1]) | (b[:, 3] < a[:, 1])
    assert apart.all()
    assert (rendering.areas > 0).all()
    edges = np.concatenate([rendering.object_map[:, [0, -1], :].ravel(), rendering.object_map[:, :, [0, -1]].ravel()])
    assert (edges == -1).all()


def test_rubber_objects_show_their_named_colour(scenes):
    meta, rendering = scenes
    rgb = np.array(list(COLOURS.values()), float)
    checked = 0
    for i, j in zip(*np.nonzero(meta["material"] == MATERIALS.index("rubber"))):
        pixels = rendering.images[i].transpose(1, 2, 0)[rendering.object_map[i] == j].astype(float)
        luminance = pixels.mean(1)
        lit = np.median(pixels[luminance >= np.quantile(luminance, 0.75)], 0)  # the brightest quarter
        nearest = np.argmin(((rgb - lit) ** 2).sum(1))
        assert nearest == meta["colour"][i, j], (list(COLOURS)[meta["colour"][i, j]], lit)
        checked += 1
    assert checked > 20


def test_large_objects_cover_more_pixels_than_small_ones(scenes):
    meta, rendering = scenes
    for shape in range(len(SHAPES)):
        small = rendering.areas[(meta["shape"] == shape) & (meta["size"] == 0)]
        large = rendering.areas[(meta["shape"] == shape) & (meta["size"] == 1)]
        assert small.max() < large.min(), SHAPES[shape]


def test_metal_and_rubber_look_different(scenes):
    meta, rendering = scenes
    right = total = 0
    for i in range(len(meta["material"])):
        for j in range(2):
            luminance = rendering.images[i].mean(0)[rendering.object_map[i] == j]
            right += (luminance.std() / luminance.mean() > METAL_CV) == (meta["material"][i, j] == 1)
            total += 1
    assert right / total >= 0.95


def test_an_object_out_of_frame_is_not_drawn():
    far = dict(size="large", colour="red", material="metal", shape="cube", x=30.0, y=0.0)
    rendering = render.render(Objects.from_names([[far]]), 32)
    assert rendering.areas[0, 0] == 0 and (rendering.object_map == -1).all()
    assert (rendering.images == render.GROUND_BYTE).all()


def test_cache_round_trip_does_not_render_again(tmp_path, monkeypatch):
    first = TwoObjects(root=tmp_path, **SMALL)
    expected = {k: np.array(a) for k, a in _arrays(first).items()}

    def no_rendering(*args, **kwargs):
        raise AssertionError("a cached split was rendered again")

    monkeypatch.setattr(render, "render", no_rendering)
    again = TwoObjects(root=tmp_path, **SMALL)
    assert isinstance(again.images, np.memmap)
    _assert_same(expected, _arrays(again))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path, damage):
    first = TwoObjects(root=tmp_path, **SMALL)
    expected = {k: np.array(a) for k, a in _arrays(first).items()}
    del first
    (path,) = tmp_path.glob("two_objects/*/images.npy")
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    else:
        data = data[:len(data) // 2]
    path.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        again = TwoObjects(root=tmp_path, **SMALL)
    _assert_same(expected, _arrays(again))


def test_items_and_transform(tmp_path):
    data = TwoObjects(root=tmp_path, split="val", transform=lambda x: 2 * x, **SMALL)
    assert len(data) == 12 and data.image_shape == (3, 32, 32)
    image, tokens = data[3]
    assert image.dtype == torch.float32 and image.shape == (3, 32, 32)
    assert 0 <= image.min() and image.max() <= 2 and image.max() > 1  # transform applied to [0, 1] pixels
    torch.testing.assert_close(image, 2 * torch.from_numpy(data.images[3] / 255).float())
    assert tokens.dtype == torch.long and VOCAB.decode(tokens) == data.text(3)


def test_single_object(tmp_path):
    data = SingleObject(root=tmp_path, **SMALL)
    assert data.vocab is SINGLE_VOCAB and data.text_length == 2 and data.tokens.shape == (N, 2)
    m = data.metadata
    assert set(m["material"].ravel()) == {MATERIALS.index("rubber")} and set(m["shape"].ravel()) == {0}
    assert set(m["colour"].ravel()) == {list(COLOURS).index("red"), list(COLOURS).index("blue")}
    for i in range(len(data)):
        assert data.text(i) == f"{list(SIZES)[m['size'][i, 0]]} {list(COLOURS)[m['colour'][i, 0]]}"
    defaults = inspect.signature(SingleObject).parameters
    assert [defaults[p].default for p in ("image_size", "num_train", "num_val")] == [64, 10_000, 1_000]


@pytest.mark.parametrize("kwargs, message", [
    (dict(image_size=31), "image_size must be an integer >= 32"),
    (dict(image_size=64.0), "image_size must be an integer"),
    (dict(num_train=-5), "num_train must be a positive integer"),
    (dict(num_val=0), "num_val must be a positive integer"),
    (dict(split="test"), "split must be one of 'train', 'val'"),
    (dict(seed=-1), "seed must be a non-negative integer"),
    (dict(workers=0), "workers must be a positive integer"),
])
def test_bad_parameters_are_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        TwoObjects(root=tmp_path, **{**SMALL, **kwargs})


def test_unknown_attribute_names_are_clear_errors():
    obj = dict(size="large", colour="pink", material="metal", shape="cube", x=0.0, y=0.0)
    with pytest.raises(ValueError, match="unknown colour 'pink'; choose from cyan, red"):
        Objects.from_names([[obj]])
    with pytest.raises(ValueError, match="unknown shape 'cone'"):
        Objects.from_names([[{**obj, "colour": "red", "shape": "cone"}]])
    with pytest.raises(ValueError, match="image_size must be an integer >= 32"):
        render.render(Objects.from_names([[{**obj, "colour": "red"}]]), 16)
