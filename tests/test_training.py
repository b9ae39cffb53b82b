"""Run directories, checkpoints, resuming, loading back, and the run/svi.py command."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmvae_zoo.training.config import RunConfig, preset
from mmvae_zoo.training.rundir import RunDir, RunError
from mmvae_zoo.training.runs import load_run
from mmvae_zoo.training.trainer import train
from tests.helpers import bare_env, tiny_config

ROOT = Path(__file__).resolve().parents[1]
SVI = [sys.executable, str(ROOT / "run" / "svi.py")]


def run_svi(*args, cwd, env_root):
    return subprocess.run(SVI + list(args), cwd=cwd, env=bare_env(env_root), capture_output=True, text=True,
                          timeout=300)


def test_config_round_trips_through_json():
    config = preset("cpu")
    assert RunConfig.from_json(config.to_json()) == config


# config.json's "net" of each model with default settings, as written before the two configs shared
# models.config.NetConfig (key order as it was then): the format a run directory keeps
OLD_NET_JSON = {
    "vlvae": '{"image_shape": [3, 112, 112], "vocab": [], "text_length": 9, "z_dim": 50, "hidden": 200, "channels": 32, '
             '"num_down": 2, "stem_kernel": 7, "stem_stride": 1, "grid": 10, "dropout": 0.5, "concentration": 100.0}',
    "jmvae": '{"image_shape": [1, 28, 28], "vocab": [], "text_length": 1, "z_dim": 64, "hidden": 512, "family": "mlp", '
             '"likelihood": "bernoulli", "concentration": 100.0, "channels": 32, "num_down": 2, "stem_kernel": 7, '
             '"stem_stride": 1, "grid": 10}',
}


@pytest.mark.parametrize("model", sorted(OLD_NET_JSON))
def test_network_configs_share_netconfig_and_keep_their_json(model):
    """Both network configs inherit NetConfig's fields; names, defaults and config.json are unchanged."""
    import dataclasses

    from mmvae_zoo.models.config import NetConfig
    from mmvae_zoo.training.config import NETS

    cls, old = NETS[model], json.loads(OLD_NET_JSON[model])
    assert issubclass(cls, NetConfig) and {f.name for f in dataclasses.fields(NetConfig)} <= set(old)
    assert json.loads(json.dumps(dataclasses.asdict(cls()))) == old  # same fields, same defaults
    assert cls(**old) == cls()
    config = RunConfig(model=model, net=cls(**old))
    assert json.loads(config.to_json())["net"] == old and RunConfig.from_json(config.to_json()) == config


def test_network_flags_reach_the_run_config():
    from mmvae_zoo.run import svi
    args = svi.parser().parse_args(["--preset", "cpu", "--num-down", "2", "--lr-decay", "constant"])
    config = svi.make_config(args, torch.device("cpu"))
    assert (config.net.num_down, config.train.lr_decay) == (2, "constant")
    assert (preset("cpu").net.num_down, preset("cpu").train.lr_decay) == (1, "step")


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown preset 'big'; choose one of paper, cpu, tiny"):
        preset("big")


def test_base_run_layout(tiny_base_run):
    run = tiny_base_run
    assert json.loads(run.config_path.read_text())["guide"] == "image"
    assert [p.name for p in run.checkpoint_paths()] == ["step_0000002.pt", "step_0000004.pt"]
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    assert {"loss", "log_px", "log_py", "kl"} <= set(run.metrics()[-1])
    assert (run.samples / "step_0000004.png").stat().st_size > 1000
    state = run.latest_checkpoint()
    assert {"step", "rng", "model", "guide", "optimizer"} <= set(state)


def _loss_on_fixed_batch(run_path):
    from mmvae_zoo.training.runs import load_run
    import pyro
    from mmvae_zoo.datasets.two_objects import TwoObjects
    components = load_run(run_path)
    config = components.config
    data = TwoObjects(config.data.root, "val", image_size=32, num_train=config.data.num_train,
                      num_val=config.data.num_val, progress=False)
    x = torch.tensor(data.images[:4]).float() / 255
    y = torch.tensor(data.tokens[:4])
    pyro.set_rng_seed(0)
    return components.loss(10**6, x, y)[0].item()


def test_checkpoint_loads_back_in_a_fresh_process(tiny_base_run):
    here = _loss_on_fixed_batch(tiny_base_run.path)
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from tests.test_training import _loss_on_fixed_batch; "
            f"print(repr(_loss_on_fixed_batch({str(tiny_base_run.path)!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip().splitlines()[-1]) == here


def test_load_run_takes_any_kept_checkpoint(tiny_base_run):
    """``step`` picks that checkpoint's weights; a step not kept is one line naming the kept ones."""
    assert tiny_base_run.checkpoint_steps() == [2, 4]
    for step in (2, 4):
        saved = torch.load(tiny_base_run.checkpoints / f"step_{step:07d}.pt", weights_only=False)["model"]
        loaded = load_run(tiny_base_run.path, step=step).model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in saved.items())
    first, last = (load_run(tiny_base_run.path, step=s).model.decoder.inp.weight for s in (2, 4))
    assert not torch.equal(first, last) and torch.equal(last, load_run(tiny_base_run.path).model.decoder.inp.weight)
    with pytest.raises(RunError, match="no checkpoint of step 3; the steps kept are: 2, 4"):
        load_run(tiny_base_run.path, step=3)


def test_existing_run_is_never_overwritten(tiny_base_run):
    before = tiny_base_run.config_path.read_text()
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(tiny_base_run.config(), tiny_base_run, device=torch.device("cpu"), progress=False)
    assert tiny_base_run.config_path.read_text() == before
    assert len(tiny_base_run.checkpoint_paths()) == 2


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny_base_run):
    run = RunDir(tmp_path / "copy")
    run.checkpoints.mkdir(parents=True)
    run.config_path.write_text(tiny_base_run.config_path.read_text())
    (run.checkpoints / "step_0000004.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RunError, match="unreadable or corrupt .* delete it"):
        load_run(run.path)


def test_svi_help_explains_every_flag():
    out = subprocess.run(SVI + ["--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for flag in ("--guide", "--preset", "--steps", "--batch-size", "--lr", "--x-weight", "--y-weight",
                 "--device", "--out", "--base", "--resume", "--data-root", "--image-size", "--seed", "--num-down",
                 "--lr-decay"):
        assert flag in out.stdout


def test_main_command_end_to_end_trains_base_then_text_guide(tmp_path):
    out = run_svi("--model", "vlvae", "--guide", "text_agg", "--preset", "tiny", "--no-progress",
                  cwd=tmp_path, env_root=tmp_path / "data")
    assert out.returncode == 0, out.stderr
    assert "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: train 4 steps\n" \
           "  phase 2/2: q_Agg (text_agg) -> runs/vlvae-text_agg-tiny: train 4 steps\n" in out.stdout
    agg = RunDir(tmp_path / "runs" / "vlvae-text_agg-tiny")
    assert agg.base_path.exists() and agg.checkpoint_paths() and list(agg.samples.glob("*.png"))
    components = load_run(agg.path)
    texts = torch.tensor([[2, 4, 11, 13, 16, 1, 5, 12, 15]])
    images, decoded = components.model.generate(components.guide.distribution(None, texts).sample((3,)))
    assert images.shape == (3, 1, 3, 32, 32) and decoded.shape == (3, 1, 9)
    again = run_svi("--guide", "text_true", "--preset", "tiny", "--no-progress", "--no-train-base",
                    cwd=tmp_path, env_root=tmp_path / "data")
    assert again.returncode == 0, again.stderr
    assert "  phase 1/2: base VLVAE (image) -> runs/vlvae-image-tiny: nothing to train (trained to step 4, reused)\n" \
           "  phase 2/2: q_True (text_true) -> runs/vlvae-text_true-tiny: train 4 steps\n" in again.stdout


@pytest.mark.parametrize("args, message", [
    (["--model", "gan"], "unknown model 'gan'; choose one of"),
    (["--guide", "text_magic"], "unknown guide 'text_magic' for model vlvae; choose one of image, joint"),
    (["--guide", "text_agg", "--no-train-base", "--base", "nowhere"], "no trained base VLVAE in nowhere"),
    (["--image-size", "34"], "not divisible by the encoder's total stride"),
    (["--num-down", "-1"], "--num-down must not be negative"),
    (["--num-down", "5"], "not divisible by the encoder's total stride"),
])
def test_svi_bad_input_is_one_clear_line(tmp_path, args, message):
    out = run_svi("--preset", "tiny", "--no-progress", *args, cwd=tmp_path, env_root=tmp_path / "data")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_base_of_another_vocabulary_is_refused(tmp_path, tiny_base_run):
    config = preset("tiny")
    config.guide = "text_agg"
    config.data.root = tiny_base_run.config().data.root
    config.data.name = "single_object"
    with pytest.raises(RunError, match="base run .* was trained on 'two_objects'"):
        train(config, RunDir(tmp_path / "agg"), device=torch.device("cpu"), base=tiny_base_run, progress=False)


@pytest.mark.parametrize("script", ["svi", "evaluate"])
def test_subnormals_are_flushed_on_every_thread(script):
    """run/<script>.py flushes subnormal floats before its first parallel op, so that the intra-op
    worker threads, made later, inherit it (Adam's state otherwise slows later epochs; docs/design.md, "The training loop").
    Importing the script must not start the thread pool first: then half the result stays subnormal."""
    code = (f"import importlib.util, sys, torch; torch.set_num_threads(2); sys.path.insert(0, {str(ROOT)!r}); "
            f"spec = importlib.util.spec_from_file_location('cli', {str(ROOT / 'run' / (script + '.py'))!r}); "
            "spec.loader.exec_module(importlib.util.module_from_spec(spec)); torch.set_flush_denormal(True); "
            "tiny = torch.full((1 << 22,), 1e-30) * 1e-10; print((tiny != 0).sum().item())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0"]


@pytest.mark.slow
def test_a_compiled_run_trains_and_computes_what_eager_networks_do(tmp_path):
    """--compile: a run trains, its checkpoints load into eager networks, and the compiled networks give the
    eager ones' Eq. 1 terms on a fixed batch (eval mode: compiled dropout draws other random numbers)."""
    config = tiny_config(tmp_path, "image", steps=3)
    config.train.compile = True
    run = RunDir(tmp_path / "compiled")
    compiled = train(config, run, device=torch.device("cpu"), progress=False)
    assert all(math.isfinite(record["loss"]) for record in run.metrics())
    eager = load_run(run.path)
    x, y = (torch.rand(4, *config.net.image_shape), torch.randint(1, 10, (4, config.net.text_length)))
    with torch.no_grad():
        z = eager.guide.distribution(x, None).mean
        h = eager.model.decoder(z)
        ours = [compiled.model.image_likelihood(compiled.model.decoder(z)).log_prob(x.clamp(1e-3, 1 - 1e-3)),
                compiled.model.text_likelihood(compiled.model.decoder(z), y).log_prob(y),
                compiled.guide.distribution(x, None).mean]
        theirs = [eager.model.image_likelihood(h).log_prob(x.clamp(1e-3, 1 - 1e-3)),
                  eager.model.text_likelihood(h, y).log_prob(y), z]
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
