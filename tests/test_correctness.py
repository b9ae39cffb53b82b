"""Correctness classifiers (VLVAE paper 5.4): the correctness rules on stub classifiers, the
relation input, persistence, training on tiny rendered and fabricated data, and the CLI."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from mmvae_zoo.datasets import celeba
from mmvae_zoo.datasets.celeba import CelebA
from mmvae_zoo.datasets.two_objects import COLOURS, MATERIALS, RELATIONS, SHAPES, SIZES, VOCAB, true_relations
from mmvae_zoo.evaluation import correctness as correctness_module
from mmvae_zoo.evaluation.correctness import (CONFIG_FILE, OBJECT_SLOTS, RELATION_SLOT, SLOT_NAMES, WEIGHTS_FILE,
                                    CelebAClassifier, ClassifierConfig, TwoObjectsClassifier, celeba_correctness,
                                    correctness, gaussian_blur, get_or_train_classifier, load_classifier,
                                    save_classifier, train_classifier, two_objects_correctness, two_objects_text_hits)
from mmvae_zoo.run import classifier as cli
from tests.test_celeba import make_celeba
from mmvae_zoo.training.config import DataConfig
from mmvae_zoo.training.rundir import RunError

TINY = ClassifierConfig(channels=8, hidden=32, steps=60, batch_size=16, lr=5e-3)
OPPOSITE = {"right": "left", "left": "right", "front": "behind", "behind": "front"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """On a busy 2-core machine every op of these tiny networks waits milliseconds for a second
    thread (measured: the module took 100 s with 2 threads, 4 s with 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Oracle(nn.Module):
    """Knows every scene of ``dataset``: given one of its images and a relation, names the object that
    is REL of the other first, as the text would; ``sign=-1`` makes it name anything but those words."""
    kind = "two_objects"

    def __init__(self, dataset, sign=1.0):
        super().__init__()
        self.dataset, self.sign = dataset, sign
        self.images = torch.from_numpy(np.array(dataset.images)).float().flatten(1) / 255

    def forward(self, images, relation):
        index = torch.cdist(images.flatten(1), self.images).argmin(1)
        logits = torch.zeros(len(images), len(OBJECT_SLOTS), len(VOCAB))
        for row, (i, r) in enumerate(zip(index.tolist(), relation.tolist())):
            position = self.dataset.metadata["position"][i]
            first = 0 if r in true_relations(position[0], position[1]) else 1
            words = [w for obj in (first, 1 - first) for w in self.object_words(i, obj)]
            logits[row, range(len(OBJECT_SLOTS)), [VOCAB.ids[w] for w in words]] = 10.0 * self.sign
        return logits

    def object_words(self, i, obj):
        m = self.dataset.metadata
        return [list(SIZES)[m["size"][i, obj]], list(COLOURS)[m["colour"][i, obj]],
                MATERIALS[m["material"][i, obj]], SHAPES[m["shape"][i, obj]]]


def reverse(tokens):
    """"A REL B" as "B OPPOSITE(REL) A": the same scene."""
    return torch.stack([VOCAB.encode(t.split()[5:] + [OPPOSITE[t.split()[4]]] + t.split()[:4])
                        for t in VOCAB.decode_batch(tokens)])


def test_an_always_right_classifier_scores_one_also_on_the_reversed_description(scenes):
    data, images, tokens = scenes
    assert correctness(Oracle(data), images, tokens).tolist() == [1.0] * len(tokens)
    reversed_texts = reverse(tokens)
    assert two_objects_correctness(Oracle(data), images, reversed_texts).tolist() == [1.0] * len(tokens)


def test_decoded_texts_are_scored_per_object_word_in_either_order(scenes):
    _, _, tokens = scenes
    assert two_objects_text_hits(tokens, tokens).all() and two_objects_text_hits(tokens, reverse(tokens)).all()
    wrong = tokens.clone()  # object 1's colour replaced by one neither object has
    colour_ids = torch.tensor([VOCAB.ids[c] for c in COLOURS])
    for row in wrong:
        row[1] = colour_ids[~torch.isin(colour_ids, row[[1, 6]])][0]
    for decoded in (wrong, reverse(wrong)):
        assert two_objects_text_hits(tokens, decoded).tolist() == [[k != 1 for k in range(8)]] * len(tokens)


def test_an_always_wrong_classifier_scores_zero(scenes):
    data, images, tokens = scenes
    assert correctness(Oracle(data, sign=-1.0), images, tokens).tolist() == [0.0] * len(tokens)


def test_malformed_texts_count_as_wrong(scenes):
    data, images, tokens = scenes
    texts = tokens[:4].clone()
    texts[0, RELATION_SLOT] = VOCAB.ids["red"]        # no relation word: every slot wrong
    texts[1, 0] = VOCAB.ids["red"]                    # a colour in the size slot
    texts[2, 8] = VOCAB.ids["left"]                   # a relation in a shape slot
    texts[3, 5:] = VOCAB.pad_id                       # a text that stops early
    assert two_objects_correctness(Oracle(data), images[:4], texts).tolist() == [0.0, 7 / 8, 7 / 8, 4 / 8]


def test_the_relation_word_changes_the_prediction(scenes):
    _, images, _ = scenes
    net = TwoObjectsClassifier(32, TINY).eval()
    with torch.no_grad():
        logits = [net(images, torch.full((len(images),), r)) for r in range(len(RELATIONS))]
    assert all(not torch.allclose(logits[0], other) for other in logits[1:])


def test_predictions_are_words_of_each_slots_kind(scenes):
    _, images, tokens = scenes
    with torch.no_grad():
        predicted = TwoObjectsClassifier(32, TINY).eval()(images, torch.zeros(len(images), dtype=torch.long)).argmax(-1)
    kinds = [SIZES, COLOURS, MATERIALS, SHAPES] * 2
    assert all(VOCAB.words[w] in kinds[s] for row in predicted.tolist() for s, w in enumerate(row))


class FixedProbabilities(nn.Module):
    kind = "celeba"

    def __init__(self, probabilities):
        super().__init__()
        self.logits = torch.logit(torch.tensor(probabilities))

    def forward(self, images):
        return self.logits.expand(len(images), -1)


def test_celeba_correctness_counts_words_above_one_half_and_ignores_blanks():
    p = [0.1] * len(celeba.WORDS)
    for word, prob in {"Male": 0.9, "Smiling": 0.6, "Bangs": 0.4, "Female": 0.5}.items():
        p[celeba.WORDS.index(word)] = prob
    texts = CelebA.vocab.encode_batch([
        ["Male", "Smiling"] + ["-"] * 7,                  # both above 1/2
        ["Smiling", "Bangs", "-", "Male", "-"],          # 2 of 3, blanks and padding ignored
        ["Female"] + ["-"] * 8,                          # exactly 1/2 is not above
        ["Bangs", "Bangs", "Male"] + ["-"] * 6,          # a repeated word counts each time
        ["-"] * 9,                                       # names nothing
    ], length=9)
    scores = correctness(FixedProbabilities(p), torch.zeros(5, 3, 64, 64), texts)
    assert scores.tolist() == pytest.approx([1.0, 2 / 3, 0.0, 1 / 3, 0.0])
    assert celeba_correctness(FixedProbabilities(p), torch.zeros(5, 3, 64, 64), texts, batch_size=2).tolist() == \
        pytest.approx(scores.tolist())


def test_save_and_load_give_identical_predictions(scenes, tmp_path):
    _, images, tokens = scenes
    for net, path in ((TwoObjectsClassifier(32, TINY), tmp_path / "two"), (CelebAClassifier(64, TINY), tmp_path / "ca")):
        torch.nn.init.normal_(net.head.out[0].running_mean)  # buffers travel too
        net.record = {"accuracy": {"word": 0.5}}
        save_classifier(net, path)
        loaded = load_classifier(path)
        assert type(loaded) is type(net) and loaded.config == net.config and loaded.record == net.record
        x = images if net.kind == "two_objects" else torch.rand(4, 3, 64, 64)
        y = tokens if net.kind == "two_objects" else CelebA.vocab.encode_batch([["Male", "Bald"]] * 4, length=9)
        assert torch.equal(correctness(loaded, x, y), correctness(net.eval(), x, y))
        inputs = (x, torch.arange(len(x)) % 4) if net.kind == "two_objects" else (x,)
        with torch.no_grad():
            assert torch.equal(loaded(*inputs), net(*inputs))


def test_missing_or_corrupt_classifier_folders_raise_run_error(tmp_path):
    path = tmp_path / "clf"
    with pytest.raises(RunError, match="no classifier"):
        load_classifier(path)
    save_classifier(TwoObjectsClassifier(32, TINY), path)
    weights = (path / WEIGHTS_FILE).read_bytes()
    (path / WEIGHTS_FILE).write_bytes(weights[: len(weights) // 2])
    with pytest.raises(RunError, match="corrupt"):
        load_classifier(path)
    save_classifier(TwoObjectsClassifier(32, ClassifierConfig(channels=8, hidden=32)), path)
    info = json.loads((path / CONFIG_FILE).read_text())
    (path / CONFIG_FILE).write_text(json.dumps({**info, "config": {**info["config"], "channels": 4}}))
    with pytest.raises(RunError, match="does not fit"):
        load_classifier(path)
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(RunError, match="not a valid classifier"):
        load_classifier(path)


def test_get_or_train_trains_once_reduces_the_loss_and_then_loads(tmp_path, capsys):
    data = DataConfig(image_size=32, num_train=64, num_val=16, root=str(tmp_path / "data"))
    net = get_or_train_classifier(data, tmp_path / "clf", progress=False, config=TINY)
    assert "training one" in capsys.readouterr().out
    record = net.record
    assert record["losses"][-1] < 0.8 * record["losses"][0]
    assert set(record["accuracy"]) == {*SLOT_NAMES, "word", "all"}
    assert all(0 <= a <= 1 for a in record["accuracy"].values()) and not net.training
    again = get_or_train_classifier(data, tmp_path / "clf", progress=False, config=TINY)
    assert "training" not in capsys.readouterr().out and again.record == record
    with pytest.raises(RunError, match="trained on two_objects at 32x32"):
        get_or_train_classifier(DataConfig(image_size=64), tmp_path / "clf")


def test_gaussian_blur_spreads_a_point_by_each_images_sigma():
    point = torch.zeros(3, 2, 33, 33)
    point[:, :, 16, 16] = 1.0
    out = gaussian_blur(point, torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(out[0], point[0])
    offsets = torch.arange(33.0) - 16
    for image, sigma in zip(out[1:], (1.0, 2.0)):
        assert image.sum(dim=(-1, -2)) == pytest.approx([1.0, 1.0], abs=1e-5)
        assert (image[0].sum(0) * offsets**2).sum().sqrt().item() == pytest.approx(sigma, rel=0.03)
        assert torch.allclose(image[0], image[0].T, atol=1e-6)


@pytest.mark.parametrize("blur", [0.0, 1.5])
def test_training_blurs_each_batch_only_when_asked(tmp_path, monkeypatch, blur):
    seen = []
    monkeypatch.setattr(correctness_module, "gaussian_blur", lambda x, sigma: seen.append(sigma) or x)
    data = DataConfig(image_size=32, num_train=32, num_val=8, root=str(tmp_path / "data"))
    train_classifier(data, ClassifierConfig(channels=2, hidden=8, steps=3, batch_size=8, blur=blur), progress=False)
    assert len(seen) == (3 if blur else 0)
    assert all(s.shape == (8,) and 0 <= s.min() and s.max() <= blur for s in seen)


def test_celeba_classifier_trains_on_a_fabricated_folder(tmp_path, monkeypatch):
    make_celeba(tmp_path / "celeba")
    monkeypatch.setattr(celeba, "PAPER_TRAIN_SIZE", 8)  # 8 train, 4 val of the 12 fabricated images
    data = DataConfig(name="celeba", image_size=64, root=str(tmp_path))
    net = train_classifier(data, ClassifierConfig(channels=2, hidden=8, steps=3, batch_size=4), progress=False)
    assert isinstance(net, CelebAClassifier)
    assert set(net.record["accuracy"]) == {*celeba.WORDS, "word", "all"}


def test_other_datasets_have_no_classifier():
    with pytest.raises(ValueError, match="two_objects and celeba"):
        train_classifier(DataConfig(name="mnist", image_size=28))


def test_cli_trains_prints_every_slot_and_saves(tmp_path, capsys):
    out = tmp_path / "clf"
    assert cli.main(["--image-size", "32", "--num-train", "32", "--num-val", "8", "--steps", "2", "--batch-size", "8",
                     "--channels", "2", "--data-root", str(tmp_path / "data"), "--out", str(out),
                     "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert all(slot in printed for slot in SLOT_NAMES) and str(out) in printed
    assert isinstance(load_classifier(out), TwoObjectsClassifier)
    assert cli.main(["--dataset", "celeba", "--data-root", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert cli.main(["--blur", "-1", "--out", str(tmp_path / "other")]) == 2
    assert "--blur must not be negative" in capsys.readouterr().err


def test_cli_help_explains_every_flag(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = capsys.readouterr().out
    flags = ["--dataset", "--image-size", "--num-train", "--num-val", "--data-root", "--steps", "--batch-size", "--lr",
             "--seed", "--device", "--out", "--channels", "--blur"]
    assert all(flag in text for flag in flags)
