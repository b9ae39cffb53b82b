"""CelebA loader on tiny fabricated folders: parsing, texts, crop and pool, splits, cache, errors."""
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mmvae_zoo.datasets import celeba
from mmvae_zoo.datasets.celeba import BLANK, WORDS, CelebA

NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
         "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
         "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
         "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
N = 12
INSIDE, OUTSIDE = (20, 40, 230), (230, 200, 10)  # colours of the crop region and of the rest


def attribute_rows(n=N, seed=0):
    """Row 0: Male and Smiling; row 1: no attribute (Female); row 2: every attribute; the rest random."""
    values = np.where(np.random.default_rng(seed).random((n, len(NAMES))) < 0.3, 1, -1)
    values[0] = -1
    values[0, [NAMES.index("Male"), NAMES.index("Smiling")]] = 1
    values[1] = -1
    values[2] = 1
    return values


def pattern_image():
    pixels = np.empty((218, 178, 3), np.uint8)
    pixels[:] = OUTSIDE
    pixels[48:176, 25:153] = INSIDE
    return pixels


def make_celeba(folder, values=None, partition=None):
    """A CelebA folder in the real file formats (irregular spacing, trailing blanks) with pattern JPEGs."""
    values = attribute_rows() if values is None else values
    n = len(values)
    (folder / "img_align_celeba").mkdir(parents=True)
    for i in range(n):
        Image.fromarray(pattern_image()).save(folder / "img_align_celeba" / f"{i + 1:06d}.jpg", quality=100,
                                              subsampling=0)
    lines = [f"{n}", " ".join(NAMES) + " "]
    lines += [f"{i + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in row) for i, row in enumerate(values)]
    lines[4] = lines[4].replace(" ", "\t ", 3)  # tabs and runs of blanks are legal separators
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    partition = np.arange(n) % 3 if partition is None else partition
    (folder / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {p}\n" for i, p in enumerate(partition)))
    return folder


@pytest.fixture
def root(tmp_path):
    make_celeba(tmp_path / "celeba")
    return tmp_path


def words(dataset, i):
    return dataset.text(i).split()


def expected_words(dataset, i):
    row = dict(zip(dataset.attribute_names, dataset.attributes[i]))
    return {w for w in WORDS if (row["Male"] < 0 if w == "Female" else row[w] > 0)}


def test_class_attributes():
    assert CelebA.text_length == 9 and CelebA.image_shape == (3, 64, 64)
    assert CelebA.vocab.to_list() == list(WORDS) + [BLANK] and len(WORDS) == 19


def test_text_is_the_present_words_padded_with_blank(root):
    d = CelebA(root, progress=False)
    assert sorted(words(d, 0)) == sorted(["Male", "Smiling"] + [BLANK] * 7)
    assert words(d, 1) == ["Female"] + [BLANK] * 8
    assert len(set(words(d, 2))) == 9 and BLANK not in words(d, 2)
    assert set(words(d, 2)) <= set(WORDS) - {"Female"}
    for i in range(len(d)):
        present = [w for w in words(d, i) if w != BLANK]
        assert words(d, i) == present + [BLANK] * (9 - len(present))  # blanks only at the end
        assert len(set(present)) == len(present) and len(present) <= 9
        want = expected_words(d, i)
        assert set(present) == want if len(want) <= 9 else set(present) < want


def test_tokens_and_items(root):
    d = CelebA(root, progress=False, transform=lambda x: x * 2)
    assert d.tokens.dtype == np.int64 and d.tokens.shape == (len(d), 9) and (d.tokens > 0).all()
    x, y = d[3]
    assert x.dtype == torch.float32 and x.shape == (3, 64, 64) and 0 <= x.min() and x.max() <= 2
    assert torch.equal(x, torch.from_numpy(d.images[3].astype(np.float32)) / 255 * 2)
    assert y.dtype == torch.long and y.shape == (9,) and CelebA.vocab.decode(y) == d.text(3)


def test_texts_are_deterministic_per_seed(root):
    a, b, c = (CelebA(root, seed=s, progress=False) for s in (0, 0, 1))
    assert np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    few = [i for i in range(len(a)) if len(expected_words(a, i)) <= 9]
    assert all(sorted(words(a, i)) == sorted(words(c, i)) for i in few)  # same words, new order


def test_shuffle_varies_across_samples_and_depends_only_on_index():
    names = list(NAMES)
    present = celeba.present_words(names, np.ones((200, len(names)), np.int8))
    tokens = celeba.make_tokens(present, 0, CelebA.vocab)
    assert len({tuple(t) for t in tokens}) > 150  # same attributes, different orders and 9-word subsets
    assert np.array_equal(celeba.make_tokens(present[:50], 0, CelebA.vocab), tokens[:50])


def test_crop_and_pool(root):
    d = CelebA(root, progress=False)
    assert d.images.dtype == np.uint8 and d.images.shape == (N, 3, 64, 64)
    # The crop is exactly the INSIDE square: a window off by one pixel would blend OUTSIDE into an edge.
    error = np.abs(d.images.astype(int) - np.array(INSIDE)[None, :, None, None])
    assert error.max() <= 8


def test_pool_is_a_rounded_2x2_mean(tmp_path):
    pixels = np.random.default_rng(1).integers(0, 256, (218, 178, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png")  # lossless, to check the arithmetic exactly
    crop = pixels[48:176, 25:153].astype(float)
    want = np.floor(crop.reshape(64, 2, 64, 2, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8).transpose(2, 0, 1)
    assert np.array_equal(celeba.convert_image(tmp_path / "x.png"), want)


def test_paper_and_official_splits(root, monkeypatch):
    monkeypatch.setattr(celeba, "PAPER_TRAIN_SIZE", 8)
    train, val = CelebA(root, "train", progress=False), CelebA(root, "val", progress=False)
    assert (len(train), len(val)) == (8, 4) and val.files[0] == "000009.jpg"
    assert isinstance(train.images, np.memmap) and isinstance(val.images, np.memmap)
    full = CelebA(root, "train", progress=False)
    official = {s: CelebA(root, s, partition="official", progress=False) for s in ("train", "val", "test")}
    assert [official[s].files[:2] for s in official] == [["000001.jpg", "000004.jpg"], ["000002.jpg", "000005.jpg"],
                                                         ["000003.jpg", "000006.jpg"]]
    assert sum(len(d) for d in official.values()) == N
    assert official["val"].text(0) == full.text(1)  # an image's text does not depend on the split
    assert np.array_equal(official["test"].images[1], full.images[5])


def test_bad_split_names(root):
    with pytest.raises(ValueError, match="choices: train, val$"):
        CelebA(root, "test", progress=False)
    with pytest.raises(ValueError, match="choices: paper, official"):
        CelebA(root, partition="random", progress=False)


def test_root_may_be_the_folder_itself(root):
    assert CelebA(root / "celeba", progress=False).text(0) == CelebA(root, progress=False).text(0)


def test_cache_is_reused(root, monkeypatch):
    first = CelebA(root, progress=False)
    monkeypatch.setattr(celeba, "convert_images", lambda *a, **k: pytest.fail("decoded the JPEGs again"))
    again = CelebA(root, progress=False)
    assert np.array_equal(first.images, again.images) and isinstance(again.images, np.memmap)


def test_parallel_decode_matches_serial(root, tmp_path, monkeypatch):
    serial = CelebA(root, progress=False).images
    shutil.rmtree(root / "celeba" / "cache")
    monkeypatch.setattr(celeba, "PARALLEL_MIN_IMAGES", 0)
    monkeypatch.setattr(celeba, "CHUNK", 5)
    assert np.array_equal(CelebA(root, progress=False).images, serial)


def test_missing_folder_says_what_to_download(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        CelebA(tmp_path, progress=False)
    message = str(e.value)
    assert str(tmp_path / "celeba") in message and "img_align_celeba.zip" in message
    assert "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html" in message and "\n" not in message


def test_missing_image_folder(root):
    shutil.rmtree(root / "celeba" / "img_align_celeba")
    with pytest.raises(FileNotFoundError, match="has no img_align_celeba/.*img_align_celeba.zip"):
        CelebA(root, progress=False)


def test_malformed_attribute_line_is_named(root):
    path = root / "celeba" / "list_attr_celeba.txt"
    lines = path.read_text().splitlines()
    lines[6] = lines[6].replace("-1", "0", 1)
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match="list_attr_celeba.txt line 7 is malformed"):
        CelebA(root, progress=False)


def test_wrong_count_and_missing_attribute(root):
    path = root / "celeba" / "list_attr_celeba.txt"
    text = path.read_text()
    path.write_text(text.replace(f"{N}\n", f"{N + 1}\n", 1))
    with pytest.raises(ValueError, match=f"line 1 says {N + 1} images but the file lists {N}"):
        CelebA(root, progress=False)
    path.write_text(text.replace("Smiling", "Grinning"))
    with pytest.raises(ValueError, match="line 2 lacks the attribute.*Smiling"):
        CelebA(root, progress=False)


def test_missing_jpeg_is_named(root):
    (root / "celeba" / "img_align_celeba" / "000005.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000005.jpg"):
        CelebA(root, progress=False)
    assert not (root / "celeba" / "cache").exists() or not any((root / "celeba" / "cache").iterdir())


def test_official_partition_file_errors(root):
    path = root / "celeba" / "list_eval_partition.txt"
    path.write_text(path.read_text().replace("000004.jpg 0", "000004.jpg 7"))
    with pytest.raises(ValueError, match="list_eval_partition.txt line 4 is malformed"):
        CelebA(root, partition="official", progress=False)
    path.unlink()
    with pytest.raises(FileNotFoundError, match="list_eval_partition.txt.*mmlab"):
        CelebA(root, partition="official", progress=False)
