"""Draw a grid of Two Objects / Single Object samples, each with its text, to a PNG.

    python run/show_data.py --dataset two_objects --image-size 64 --num 16 --out samples.png
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import inspect  # noqa: E402
import math  # noqa: E402

from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

from mmvae_zoo.datasets.cache import default_root  # noqa: E402
from mmvae_zoo.datasets.render import check_image_size  # noqa: E402
from mmvae_zoo.datasets.two_objects import SingleObject, TwoObjects  # noqa: E402
from mmvae_zoo.evaluation.plots import save_grid  # noqa: E402
from mmvae_zoo.training.rundir import (REPORTED_ERRORS, check_count, check_folder, check_output_file, check_seed,  # noqa: E402
                            error_message)

DATASETS = {"two_objects": TwoObjects, "single_object": SingleObject}
WORDS_PER_LINE = 5  # Two Objects texts wrap after "size colour material shape relation"
IMAGE_TYPES = tuple(FigureCanvasBase.get_supported_filetypes())  # what --out may end in: png, pdf, svg, ...


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=DATASETS, default="two_objects", help="which dataset to draw")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image side in pixels, >= 32 (default: the dataset's, 112 or 64)")
    parser.add_argument("--num", type=int, default=16, help="how many samples: the first NUM of the split")
    parser.add_argument("--split", choices=("train", "val"), default="train", help="which split to draw from")
    parser.add_argument("--seed", type=int, default=0, help="the dataset seed")
    parser.add_argument("--root", default=None,
                        help="cache folder for the generated arrays (default: $MMVAE_DATA_ROOT or ~/.cache/mmvae-zoo)")
    parser.add_argument("--out", default=None, help="PNG to write (default: <dataset>_<size>px.png here)")
    args = parser.parse_args(argv)

    cls = DATASETS[args.dataset]
    options = {} if args.image_size is None else {"image_size": args.image_size}
    counts = {"num_train": args.num} if args.split == "train" else {"num_val": args.num}
    size = args.image_size or inspect.signature(cls).parameters["image_size"].default
    out = Path(args.out or f"{args.dataset}_{size}px.png")
    try:  # every flag and path first: rendering takes a while
        if args.image_size is not None:
            check_image_size(args.image_size)
        check_count(args.num, "--num")
        check_seed(args.seed)
        check_output_file(out, "--out", overwrite=True, suffixes=IMAGE_TYPES)
        check_folder(args.root or default_root(), "--root", writable=False)
        data = cls(root=args.root, split=args.split, seed=args.seed, **options, **counts)
        images = data.images[:len(data)].astype("float32") / 255
        save_grid(out, images, [data.text(i) for i in range(len(data))], ncols=math.ceil(math.sqrt(len(data))),
                  title=f"{args.dataset}, {args.split} split, seed {args.seed}, {size}x{size} px",
                  words_per_line=WORDS_PER_LINE)
    except KeyboardInterrupt:
        print(f"interrupted; {out} not written", file=sys.stderr)
        return 130
    except REPORTED_ERRORS as e:  # a bad flag or path; an OS error; a corrupt cache
        print(f"error: {error_message(e)}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
