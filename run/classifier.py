"""Train a correctness classifier (VLVAE paper 5.4) and save it for the evaluation.

    python run/classifier.py                                  # Two Objects, 64x64 (the cpu preset's data)
    python run/classifier.py --image-size 112 --num-train 90000 --num-val 10000    # the paper's data
    python run/classifier.py --dataset celeba --image-size 64
    python run/classifier.py --blur 1.5 --out runs/classifier-two_objects-64-blur   # robust to blur

Two Objects: the classifier reads an image and its text's relation word and predicts the 8 object
words. CelebA: it gives each of the 19 attribute words a probability. Prints the validation
accuracy of each word slot and overall, and saves the classifier as a folder (classifier.json,
weights.pt) that ``evaluation.correctness.load_classifier`` loads.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from mmvae_zoo.datasets.cache import default_root  # noqa: E402
from mmvae_zoo.datasets.registry import describe  # noqa: E402
from mmvae_zoo.datasets.render import check_image_size  # noqa: E402
from mmvae_zoo.evaluation.correctness import (CLASSIFIERS, CONFIG_FILE, ClassifierConfig, default_classifier_dir,  # noqa: E402
                                    save_classifier, train_classifier)
from mmvae_zoo.training.config import DataConfig  # noqa: E402
from mmvae_zoo.training.rundir import (REPORTED_ERRORS, RunError, check_count, check_finite, check_folder,  # noqa: E402
                             check_seed, error_message, parse_device)

DEFAULTS = ClassifierConfig()
SUMMARY_LABELS = {"word": "mean over slots", "all": "every slot right"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="two_objects", choices=list(CLASSIFIERS),
                   help="whose texts to predict (default two_objects)")
    p.add_argument("--image-size", type=int, default=64,
                   help="image height and width; must match the VAEs the classifier will score (default 64; "
                        "CelebA is always 64)")
    p.add_argument("--num-train", type=int, default=20_000,
                   help="Two Objects training images to render, the same set the VAE trains on (default 20000)")
    p.add_argument("--num-val", type=int, default=2_000,
                   help="Two Objects validation images the accuracy is measured on (default 2000)")
    p.add_argument("--data-root", help="where datasets are cached or found (default $MMVAE_DATA_ROOT or "
                                       "~/.cache/mmvae-zoo)")
    p.add_argument("--channels", type=int, default=DEFAULTS.channels,
                   help=f"stem channels of the image encoder, doubled per downsampling (default {DEFAULTS.channels})")
    p.add_argument("--steps", type=int, default=DEFAULTS.steps, help=f"optimisation steps (default {DEFAULTS.steps})")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size,
                   help=f"images per step (default {DEFAULTS.batch_size})")
    p.add_argument("--lr", type=float, default=DEFAULTS.lr,
                   help=f"initial Adam learning rate, cosine-annealed to 0 (default {DEFAULTS.lr})")
    p.add_argument("--blur", type=float, default=DEFAULTS.blur,
                   help="blur each training image by a Gaussian of sigma drawn from [0, BLUR] pixels, so that "
                        "blurry reconstructions are read by their shapes, not their sharpness (default 0: real "
                        "images only, as the paper)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--out", help="folder to save the classifier in (default runs/classifier-<dataset>-<image size>)")
    p.add_argument("--overwrite", action="store_true", help="replace a classifier already in --out (default: refuse)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_args(args, data: DataConfig, config: ClassifierConfig, out: Path):
    """Every flag, --out and the data root, before any image is rendered or step taken: the device."""
    if args.blur < 0:
        raise ValueError(f"--blur must not be negative, got {args.blur}; pass 0 (no blur) or a sigma in pixels")
    check_folder(out, "--out")
    if (out / CONFIG_FILE).exists() and not args.overwrite:
        raise RunError(f"{out} already holds a classifier; pass --overwrite to replace it or choose another --out")
    for name in ("steps", "batch_size", "channels", "num_train", "num_val"):
        check_count(getattr(args, name), "--" + name.replace("_", "-"))
    for name in ("lr", "blur"):
        check_finite(getattr(args, name), "--" + name)
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}; pass --lr > 0")
    check_seed(args.seed)
    describe(data)  # the dataset's fixed image size
    if args.dataset == "two_objects":
        check_image_size(args.image_size)
        if args.batch_size > args.num_train:
            raise ValueError(f"--batch-size {args.batch_size} is more than the {args.num_train} training images; use "
                             f"a smaller --batch-size or more --num-train")
    CLASSIFIERS[args.dataset](args.image_size, config)  # its networks fit the image size (a ValueError if not)
    check_folder(data.root or default_root(), "--data-root", writable=False)
    return parse_device(args.device)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    data = DataConfig(name=args.dataset, image_size=args.image_size, num_train=args.num_train,
                      num_val=args.num_val, root=args.data_root)
    config = ClassifierConfig(channels=args.channels, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                              seed=args.seed, blur=args.blur)
    out = Path(args.out) if args.out else default_classifier_dir(data)
    try:
        device = check_args(args, data, config, out)
        classifier = train_classifier(data, config, device, progress=not args.no_progress)
        save_classifier(classifier, out)
    except REPORTED_ERRORS as e:  # a bad flag or folder; an OS error; a corrupt data file
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; nothing saved", file=sys.stderr)
        return 130
    record = classifier.record
    print(f"\n{args.dataset} classifier, {args.steps} steps in {record['seconds']:.0f} s on {device}; "
          f"validation accuracy:")
    for slot, accuracy in record["accuracy"].items():
        print(f"  {SUMMARY_LABELS.get(slot, slot):<20} {accuracy:.2%}")
    print(f"saved in {out} ({CONFIG_FILE}, weights); load with mmvae_zoo.evaluation.correctness.load_classifier('{out}')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
