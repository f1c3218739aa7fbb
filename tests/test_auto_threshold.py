"""``s2l-train --auto-threshold``: the saved mask threshold from the forest's share (issue 14)."""

import csv

import numpy as np
import pytest
import torch

from _auto_threshold import check_cut, forest_share, logit
from _demo import scribbled_demo
from s2l_tools.cli import train
from s2l_tools.errors import S2LError
from s2l_tools.training.auto_threshold import (BINS, probability_histogram, share_above,
                                               share_threshold)
from s2l_tools.training.checkpoint import load_checkpoint, load_model
from s2l_tools.training.config import TrainConfig
from s2l_tools.training.data import load_training_data


# ---------------------------------------------------------------------- the pure rule
def test_share_threshold_is_the_quantile_at_the_share():
    rng = np.random.default_rng(0)
    p = rng.beta(0.3, 0.6, 200_000)  # piled up near 0 and 1, as a trained network's
    hist = probability_histogram(p)
    assert hist.shape == (BINS,) and hist.sum() == p.size
    for share in (0.01, 0.05, 0.2, 0.45):
        cut = share_threshold(hist, share, floor=0.0)
        q = np.quantile(p, 1 - share)
        # the quantile rounded up to the next bin edge (bins of 0.001 in the logit)
        assert 0 <= logit(cut) - logit(q) <= 0.0011, (share, cut, q)
        assert abs(np.mean(p >= cut) - share) < 1e-3
        assert share_above(hist, cut) == pytest.approx(np.mean(p >= cut), abs=1e-3)
    # never below the floor: a network calling fewer pixels cell than the forest keeps it
    assert share_threshold(hist, 0.9, floor=0.5) == 0.5
    # the images' histograms add up to the whole's (ranks send sums)
    assert np.array_equal(probability_histogram(p[:1000]) + probability_histogram(p[1000:]),
                          hist)


def test_share_threshold_at_the_ends():
    # no pixel should be cell: the cut passes the largest probability
    cut = share_threshold(probability_histogram(np.array([0.1, 0.2, 0.7])), 0.0, floor=0.0)
    assert 0.7 < cut < 0.7003
    # pixels at exactly 1 cannot be split: the last bin's edge, still below 1
    saturated = probability_histogram(np.r_[np.ones(60), np.zeros(40)])
    cut = share_threshold(saturated, 0.3)
    assert 1 - 1e-6 < cut < 1 and share_above(saturated, cut) == 0.6
    with pytest.raises(ValueError, match="pixels in it"):
        share_threshold(np.zeros(BINS, np.int64), 0.5)
    with pytest.raises(ValueError, match="share"):
        share_threshold(saturated, 1.5)
    with pytest.raises(ValueError, match="min_kept"):
        share_threshold(saturated, 0.3, min_kept=2)


def test_the_cut_keeps_a_part_of_the_network_foreground():
    """A forest that found (almost) no cell does not push the cut past every pixel: the
    share matched is at least min_kept of the network's own at the floor."""
    p = np.random.default_rng(1).beta(0.3, 0.6, 100_000)
    hist = probability_histogram(p)
    at_floor = np.mean(p >= 0.5)
    for share in (0.0, 0.001):
        cut = share_threshold(hist, share, floor=0.5, min_kept=0.25)
        assert np.mean(p >= cut) == pytest.approx(0.25 * at_floor, abs=1e-3)
    # a share above the limit is matched as before
    assert share_threshold(hist, 0.2, 0.5, min_kept=0.25) == share_threshold(hist, 0.2, 0.5)


# --------------------------------------------------------------------- in s2l-train
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return scribbled_demo(tmp_path_factory, n_val=1)


# enough steps that BatchNorm's running statistics have moved: the maps are not all 0 / 1;
# a floor of 0.05 so the cut is the share's, not the floor
SMALL = ["--encoder", "resnet18", "--crop", "64", "--batch-size", "4", "--samples-per-epoch",
         "32", "--ensemble-every", "1", "--warmup-epochs", "1", "--tile", "64",
         "--panel-images", "0", "--device", "cpu", "--auto-threshold", "--mask-threshold",
         "0.05"]


def test_auto_threshold_saves_the_forest_share_cut(data, tmp_path, capsys, monkeypatch):
    from s2l_tools.training import engine

    def no_pass_of_its_own(*args, **kwargs):
        raise AssertionError("the held-out strokes got a pass of their own")

    # after the last epoch the cut's pass over every image also counts the held-out strokes
    monkeypatch.setattr(engine, "measure_holdout", no_pass_of_its_own)
    out = tmp_path / "run"
    assert train.main([str(data / "train"), "--out", str(out), "--val", str(data / "val"),
                       "--epochs", "2", "--fast-start", "forest", *SMALL]) == 0
    err = capsys.readouterr().err
    assert "mask threshold " in err and "(--auto-threshold): at 0.05 the network calls" in err
    ck = load_checkpoint(out / "checkpoint.pt")
    # the fast start's forest share is the rule's, kept for a resume
    assert ck["forest_share"] == pytest.approx(forest_share(data / "train"), abs=1e-12)
    cut = check_cut(out, data / "train", share=ck["forest_share"])
    assert ck["meta"]["threshold"] == cut
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert rows[-1]["mask_threshold"] and float(rows[-1]["mask_threshold"]) == \
        pytest.approx(cut, rel=1e-5)
    assert not rows[0]["mask_threshold"]  # set once, after the last epoch
    # and why: the forest's share and the network's at the floor, as the run said
    assert float(rows[-1]["forest_share"]) == pytest.approx(ck["forest_share"], rel=1e-5)
    net = float(rows[-1]["network_share"])
    assert f"the network calls {100 * net:.1f} % of the training pixels cell" in err
    # the last validation scored the saved model as s2l-predict will: at the cut
    from s2l_tools.device import inference_dtype
    from s2l_tools.training.data import load_validation
    from s2l_tools.training.engine import validate

    model, meta = load_model(out / "model.pt")
    # the same pass measured the most of one training image the network calls cell at the
    # cut (the saved threshold), which s2l-predict compares each image's mask with
    from s2l_tools.inference.predict import predict_probability

    amp = inference_dtype(True, torch.device("cpu"))
    maps = [predict_probability(model, im, meta, device="cpu", amp=amp, batch_size=1)
            for im in load_training_data(data / "train").images]
    assert meta.train_share_max == pytest.approx(max(np.mean(p >= cut) for p in maps), abs=5e-3)
    assert max(np.mean(p >= 0.05) for p in maps) > meta.train_share_max + 0.02  # not the floor's
    assert float(rows[-1]["train_share_max"]) == pytest.approx(meta.train_share_max, abs=1e-4)
    scores = validate(model, load_validation(data / "val", channel=None), device=torch.device("cpu"),
                      amp_dtype=inference_dtype(True, torch.device("cpu")), tile=64,
                      min_size=meta.min_size, threshold=cut)
    assert float(rows[-1]["val_iou"]) == pytest.approx(scores["val_iou"], abs=1e-5)
    # the held-out strokes' scores of that pass: the final model's, as measure_holdout counts
    monkeypatch.undo()
    held = engine.measure_holdout(model, load_training_data(data / "train", holdout=0.1, seed=0),
                                  engine.Context(), device=torch.device("cpu"),
                                  amp_dtype=inference_dtype(True, torch.device("cpu")), tile=64)
    assert set(held) == {"holdout_fg", "holdout_bg"}
    for key, value in held.items():
        assert float(rows[-1][key]) == pytest.approx(value, abs=1e-6)


def test_auto_threshold_after_a_resume_and_without_a_forest_start(data, tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    # a fixed thread count: float rounding depends on it, and by default it follows the load
    common = [str(data / "train"), "--fast-start", "forest", "--checkpoint-every", "1",
              "--threads", "1", *SMALL]
    assert train.main([*common, "--out", str(straight), "--epochs", "2"]) == 0
    assert train.main([*common, "--out", str(split), "--epochs", "1"]) == 0
    first = load_checkpoint(split / "checkpoint.pt")
    assert first["forest_share"] is not None
    assert train.main(["--out", str(split), "--resume", "--epochs", "2"]) == 0
    # the resumed run cut with the share kept from its fast start, on the final model:
    # what the straight run saved
    ck = load_checkpoint(split / "checkpoint.pt")
    assert ck["forest_share"] == first["forest_share"]
    _, a = load_model(straight / "model.pt")
    _, b = load_model(split / "model.pt")
    assert a.threshold == pytest.approx(b.threshold, abs=1e-6)
    # no fast start (pCE): the same forest is fitted after the last epoch
    pce = tmp_path / "pce"
    assert train.main([str(data / "train"), "--out", str(pce), "--method", "pce",
                       "--epochs", "1", *SMALL]) == 0
    assert load_checkpoint(pce / "checkpoint.pt")["forest_share"] == pytest.approx(
        first["forest_share"], abs=1e-12)
    check_cut(pce, data / "train", share=first["forest_share"])


def test_auto_threshold_settings(data, tmp_path, capsys):
    with pytest.raises(S2LError, match="--method full"):
        TrainConfig(method="full", auto_threshold=True).validate()
    parse = train.get_parser().parse_args
    base = [str(data / "train"), "--out", str(tmp_path / "x")]
    assert train.config_from_args(parse([*base, "--preset", "laptop"])).auto_threshold
    # the laptop preset with full masks leaves it out (no strokes), given it is refused
    assert not train.config_from_args(parse([*base, "--preset", "laptop", "--method",
                                             "full"])).auto_threshold
    assert train.main([*base, "--method", "full", "--auto-threshold"]) == 1
    err = capsys.readouterr().err
    assert "--auto-threshold" in err and "Traceback" not in err
    # a resumed run may turn it on or off: it only sets what is saved at the end
    from s2l_tools.training.engine import RESUME_FREE

    assert "auto_threshold" in RESUME_FREE


# ---------------------------------------------------------------- over two gloo ranks
class _Ramp(torch.nn.Module):
    """Logits that follow the image: a map of every shade, neither all 0 nor all 1."""

    def forward(self, x):
        z = 4 * (x[:, :1] - 0.5)
        return torch.cat([-z, z], 1)


def _cut_work(rank, data_dir, ctx=None):
    from s2l_tools.training import auto_threshold as auto
    from s2l_tools.training.data import load_training_data
    from s2l_tools.training.engine import _tiling

    if ctx is None:
        from s2l_tools.training.distributed import TorchDistContext

        ctx = TorchDistContext()
    data = load_training_data(data_dir, holdout=0.1, seed=0)
    share = auto.forest_share(data, ctx, seed=0)  # fitted here, each rank its images
    return {"share": share, "cut": auto.final_threshold(
        _Ramp(), data, ctx, share=share, floor=0.05, meta=_tiling(data.in_channels, 64),
        device="cpu", amp_dtype=None)}


def test_two_ranks_cut_where_one_process_cuts(data, tmp_path):
    """Each rank predicts every other image; the summed counts give every rank the cut
    (and the forest share) of one process that sees all of them."""
    from _gloo import run_ranks
    from s2l_tools.training.engine import Context

    ranks = run_ranks(_cut_work, str(data / "train"), out=tmp_path)
    want = _cut_work(0, str(data / "train"), ctx=Context())
    assert ranks[0] == ranks[1] == want
    assert want["share"] == pytest.approx(forest_share(data / "train"), abs=1e-12)
    assert 0.05 < want["cut"][0] < 0.999  # the share's cut, not the floor or the end


def test_a_forest_that_found_no_cell(data):
    """final_threshold with a forest share of 0: the network keeps MIN_KEPT of what it calls
    cell at the floor, and the run's line says why."""
    from s2l_tools.training import auto_threshold as auto
    from s2l_tools.training.data import load_training_data
    from s2l_tools.training.engine import Context, _tiling
    from s2l_tools.training.reports import auto_threshold_line

    d = load_training_data(data / "train", holdout=0.1, seed=0)
    cut, net, at_cut, image_max = auto.final_threshold(
        _Ramp(), d, Context(), share=0.0, floor=0.05, meta=_tiling(d.in_channels, 64),
        device="cpu", amp_dtype=None)
    assert 0.05 < cut < 0.999 and net > 0.1
    # the most of one image at the cut: the ramp's p = sigmoid(8 (x - 0.5)) >= cut (at the
    # floor, 0.05, the most is larger)
    ramp = [1 / (1 + np.exp(-8 * (im[0] - 0.5))) for im in d.images]
    by_image = [float(np.mean(p >= cut)) for p in ramp]
    assert image_max < max(float(np.mean(p >= 0.05)) for p in ramp) - 0.05
    assert max(by_image) - min(by_image) > 0.01  # the images differ, so the max is tested
    assert image_max == pytest.approx(max(by_image), abs=2e-3)
    assert at_cut == pytest.approx(auto.MIN_KEPT * net, abs=2e-3)
    line = auto_threshold_line(cut, floor=0.05, network=net, at_cut=at_cut, forest=0.0,
                               seconds=1.0)
    assert "25 % of its own" in line and "the forest found almost no cell" in line
