"""Held-out strokes: the seeded split (properties), its place in the training data, the
measurement (one process and a real 2-rank gloo group) and what a run reports."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from s2l_tools import labels as L
from s2l_tools.cli import train
from s2l_tools.data.holdout import count_strokes, split_strokes
from s2l_tools.training.config import TrainConfig
from s2l_tools.training.data import array_digest, load_training_data

from _gloo import run_ranks

EIGHT = np.ones((3, 3), bool)


def _random_masks(seed, n_images=5, shape=(48, 48)):
    """Masks of separate short strokes (never touching), a random number of each class."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(n_images):
        m = np.zeros(shape, np.uint8)
        for r in range(1, shape[0] - 1, 3):  # rows 1, 4, 7, ...: a free row between strokes
            for c0 in range(1, shape[1] - 6, 8):
                if rng.random() < 0.3:
                    m[r, c0:c0 + rng.integers(1, 6)] = rng.choice([L.BACKGROUND, L.FOREGROUND])
        masks.append(m)
    return masks


def _strokes_of(mask, code):
    return ndimage.label(mask == code, structure=EIGHT)[1]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_split_properties(seed, fraction):
    masks = _random_masks(seed)
    before = [m.copy() for m in masks]
    train_masks, held = split_strokes(masks, fraction, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(masks, before))  # inputs untouched
    total, n_held = count_strokes(masks), count_strokes(held)
    for m, t, h in zip(masks, train_masks, held):
        h = np.zeros_like(m) if h is None else h
        assert t.dtype == np.uint8 and h.dtype == np.uint8
        # a partition of the labelled pixels: each in exactly one of the two, its class kept
        assert not ((t > 0) & (h > 0)).any()
        assert np.array_equal(np.where(h > 0, h, t), m)
        for code in (L.BACKGROUND, L.FOREGROUND):
            if (m == code).any():  # every image keeps a stroke of each class it had
                assert _strokes_of(t, code) >= 1
            # held-out strokes are whole strokes: the strokes of m are those of t plus h
            assert _strokes_of(t, code) + _strokes_of(h, code) == _strokes_of(m, code)
    for code, n in total.items():
        # as many as the fraction asks, unless the last-stroke rule stops it
        kept_min = sum(1 for m in masks if (m == code).any())
        want = min(round(fraction * n), n - kept_min)
        assert n_held.get(code, 0) == want, (code, n, kept_min)
    # deterministic from the seed; another seed, another split
    again = split_strokes(masks, fraction, seed=seed)[1]
    assert all((a is None and b is None) or np.array_equal(a, b) for a, b in zip(held, again))
    other = split_strokes(masks, fraction, seed=seed + 100)[1]
    assert any((a is None) != (b is None) or (a is not None and not np.array_equal(a, b))
               for a, b in zip(held, other))


def test_one_stroke_per_image_holds_none_of_that_class():
    masks = []
    for k in range(6):
        m = np.zeros((20, 40), np.uint8)
        m[18, :] = L.BACKGROUND  # one background stroke per image
        m[2, 2 + 6 * k: 4 + 6 * k] = L.FOREGROUND
        m[8, 2: 4] = L.FOREGROUND  # two foreground strokes per image
        masks.append(m)
    train_masks, held = split_strokes(masks, 0.5, seed=4)
    assert count_strokes(held) == {L.FOREGROUND: 6}  # round(0.5 * 12): one from each image
    assert all((t == L.BACKGROUND).sum() == 40 for t in train_masks)


def test_diagonal_pixels_are_one_stroke_and_edge_cases():
    m = np.zeros((6, 6), np.uint8)
    m[[0, 1, 2], [0, 1, 2]] = L.FOREGROUND  # touching at corners: one stroke
    m[5, 5] = L.FOREGROUND
    m[0, 5] = L.BACKGROUND
    assert count_strokes([m, None]) == {L.BACKGROUND: 1, L.FOREGROUND: 2}
    t, h = split_strokes([m], 0.5, seed=0)  # round(0.5 * 2) = 1 foreground stroke out
    assert count_strokes(h) == {L.FOREGROUND: 1} and count_strokes(t)[L.FOREGROUND] == 1
    t, h = split_strokes([m], 0.0, seed=0)
    assert h == [None] and np.array_equal(t[0], m)
    assert split_strokes([], 0.3) == ([], [])
    for bad in (1.0, -0.1, math.nan, math.inf):
        with pytest.raises(ValueError, match="fraction"):
            split_strokes([m], bad)


# ------------------------------------------------------------------ in the training data
@pytest.fixture(scope="module")
def data(demo_train):
    return demo_train


def test_training_data_holds_out_and_keeps_the_users_digests(data):
    whole = load_training_data(data)
    split = load_training_data(data, holdout=0.3, seed=2)
    assert whole.heldout == [] and whole.stroke_counts == {}
    assert split.digests == whole.digests  # --resume checks the user's files
    assert [d["scribbles"] for d in split.digests] == [array_digest(s) for s in whole.scribbles]
    n_out = 0
    for full, t, h in zip(whole.scribbles, split.scribbles, split.heldout):
        h = np.zeros_like(full) if h is None else h
        assert np.array_equal(np.where(h > 0, h, t), full) and not ((t > 0) & (h > 0)).any()
        n_out += int((h > 0).sum())
    assert n_out > 0
    total = count_strokes(whole.scribbles)
    assert {c: n for c, (_, n) in split.stroke_counts.items()} == total
    assert {c: h for c, (h, _) in split.stroke_counts.items() if h} == count_strokes(split.heldout)
    again = load_training_data(data, holdout=0.3, seed=2)
    assert all(np.array_equal(a, b) for a, b in zip(again.scribbles, split.scribbles))


def test_holdout_setting_is_checked(data, tmp_path, capsys):
    for value in ("1", "-0.1", "nan"):
        assert train.main([str(data), "--out", str(tmp_path / "x"),
                           "--holdout-strokes", value]) == 1
        err = capsys.readouterr().err
        assert f"--holdout-strokes {value}" in err and "Traceback" not in err, err
    assert not (tmp_path / "x").exists()
    assert TrainConfig(holdout_strokes=0).validate().holdout_strokes == 0
    help_text = " ".join(train.get_parser().format_help().split())
    assert "--holdout-strokes FRACTION" in help_text and "0 turns it off" in help_text


# ------------------------------------------------------------------ the measurement
class _Sign(torch.nn.Module):
    """Logits (N, 2, H, W) from the first channel: foreground where it is above ``cut``."""

    def __init__(self, cut):
        super().__init__()
        self.cut = cut

    def forward(self, x):
        z = 50 * (x[:, :1] - self.cut)
        return torch.cat([-z, z], dim=1)


def _counts_by_hand(model, data):
    """(fg right, fg px, bg right, bg px) computed directly from the model's logits."""
    c = np.zeros(4)
    for img, h in zip(data.images, data.heldout):
        if h is None:
            continue
        cell = (model(torch.from_numpy(img)[None])[0, 1] > 0).numpy()
        c += [((h == L.FOREGROUND) & cell).sum(), (h == L.FOREGROUND).sum(),
              ((h == L.BACKGROUND) & ~cell).sum(), (h == L.BACKGROUND).sum()]
    return c


def test_measure_holdout_and_ensemble_step_count_the_heldout_pixels(data):
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.engine import Context, ensemble_step, measure_holdout

    d = load_training_data(data, holdout=0.3, seed=0)
    model = _Sign(float(np.median(np.concatenate([im[0].ravel() for im in d.images]))))
    fg_right, fg_px, bg_right, bg_px = _counts_by_hand(model, d)
    assert fg_px > 0 and bg_px > 0
    want = {"holdout_fg": fg_right / fg_px, "holdout_bg": bg_right / bg_px}
    opts = dict(device=torch.device("cpu"), amp_dtype=None, tile=64)
    got = measure_holdout(model, d, Context(), **opts)
    assert got == pytest.approx(want, abs=1e-12)
    store = EmaStore(d.shapes, alpha=0.2)
    row = ensemble_step(model, store, d, Context(), **opts)
    assert {k: row[k] for k in want} == pytest.approx(want, abs=1e-12)
    assert store.all_initialized  # the ensemble pass still updates the store
    # perfect and inverted models: 100 % and 0 % of both classes
    assert measure_holdout(_Sign(-1e9), d, Context(), **opts) == {"holdout_fg": 1.0,
                                                                   "holdout_bg": 0.0}
    assert measure_holdout(_Sign(1e9), d, Context(), **opts) == {"holdout_fg": 0.0,
                                                                  "holdout_bg": 1.0}
    assert measure_holdout(model, load_training_data(data), Context(), **opts) == {}


def _holdout_work(rank, data_dir):
    import s2l_tools.training.distributed as D
    from s2l_tools.training.ema import EmaStore
    from s2l_tools.training.engine import ensemble_step, measure_holdout

    d = load_training_data(data_dir, holdout=0.3, seed=0)
    model = _Sign(float(np.median(np.concatenate([im[0].ravel() for im in d.images]))))
    ctx = D.TorchDistContext()
    opts = dict(device=torch.device("cpu"), amp_dtype=None, tile=64)
    rows = {"measure": measure_holdout(model, d, ctx, **opts),
            "ensemble": ensemble_step(model, EmaStore(d.shapes, alpha=0.2), d, ctx, **opts),
            "heldout": [None if h is None else array_digest(h) for h in d.heldout]}
    return json.dumps(rows)  # plain numbers, as the run's metrics are written


def test_two_ranks_split_alike_and_sum_their_counts(data, tmp_path):
    """2 gloo ranks, each predicting its share: the same split and the single process's scores."""
    ranks = run_ranks(_holdout_work, str(data), out=tmp_path)
    d = load_training_data(data, holdout=0.3, seed=0)
    fg_right, fg_px, bg_right, bg_px = _counts_by_hand(
        _Sign(float(np.median(np.concatenate([im[0].ravel() for im in d.images])))), d)
    want = {"holdout_fg": fg_right / fg_px, "holdout_bg": bg_right / bg_px}
    digests = [None if h is None else array_digest(h) for h in d.heldout]
    assert sum(h is not None for h in d.heldout) >= 2  # both ranks have images to predict
    for rank in (0, 1):
        got = json.loads(ranks[rank])
        assert got["heldout"] == digests
        assert got["measure"] == pytest.approx(want, abs=1e-12)
        assert {k: got["ensemble"][k] for k in want} == pytest.approx(want, abs=1e-12)


# ------------------------------------------------------------------ what a run reports
TINY = ["--encoder", "resnet18", "--crop", "32", "--batch-size", "2", "--samples-per-epoch",
        "2", "--warmup-epochs", "1", "--checkpoint-every", "2", "--tile", "64",
        "--panel-images", "0", "--device", "cpu"]


def test_run_reports_heldout_strokes_and_resume_keeps_the_setting(data, tmp_path, capsys):
    out = tmp_path / "run"
    # pce: no ensemble pass, so the held-out strokes are measured at --val-every epochs
    # (2) and after the last one (3); epoch 1 measures nothing
    assert train.main([str(data), "--out", str(out), "--method", "pce", "--epochs", "3",
                       "--val-every", "2", "--holdout-strokes", "0.3", *TINY]) == 0
    text = capsys.readouterr()
    assert "held-out strokes: " in text.err and "kept out of training" in text.err
    lines = [ln for ln in text.err.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3 and "held-out" not in lines[0]
    assert all("held-out fg " in ln and "% bg " in ln for ln in lines[1:]), lines
    final = [ln for ln in text.out.splitlines() if ln.startswith("held-out strokes (")]
    assert len(final) == 1 and "never trained on): " in final[0], text.out
    assert "% of foreground and " in final[0] and "% of background pixels right" in final[0]
    rows = (out / "metrics.csv").read_text().splitlines()
    head = rows[0].split(",")
    assert "holdout_fg" in head and "holdout_bg" in head
    fg = [r.split(",")[head.index("holdout_fg")] for r in rows[1:]]
    assert fg[0] == "" and all(0 <= float(v) <= 1 for v in fg[1:])
    shown = float(final[0].split("): ")[1].split(" %")[0])
    assert abs(shown - 100 * float(fg[2])) <= 0.5  # the final line is the last epoch's
    assert json.loads((out / "config.json").read_text())["holdout_strokes"] == 0.3
    # another share on --resume: refused, as any training setting
    assert train.main(["--out", str(out), "--resume", "--epochs", "4",
                       "--holdout-strokes", "0.1"]) == 1
    assert "--holdout-strokes 0.3 -> 0.1" in capsys.readouterr().err
    # a run from before held-out strokes (its config.json without the setting) trained on
    # every stroke: resumed, it goes on doing so
    cfg = json.loads((out / "config.json").read_text())
    del cfg["holdout_strokes"]
    (out / "config.json").write_text(json.dumps(cfg))
    args = train.get_parser().parse_args(["--out", str(out), "--resume"])
    assert train.config_from_args(args).holdout_strokes == 0.0


def test_off_says_so(data, tmp_path, capsys):
    assert train.main([str(data), "--out", str(tmp_path / "r"), "--method", "pce",
                       "--epochs", "1", "--holdout-strokes", "0", *TINY]) == 0
    text = capsys.readouterr()
    assert "held-out strokes: off (--holdout-strokes 0)" in text.out
    assert "holdout_fg" not in (tmp_path / "r" / "metrics.csv").read_text()


def test_report_lines_in_words():
    from s2l_tools.training.reports import epoch_summary, holdout_result, holdout_split

    cfg = TrainConfig(epochs=3, method="pce")
    row = {"epoch": 2, "loss": 0.5, "l_sp": 0.5, "holdout_fg": 0.96, "holdout_bg": 0.998,
           "epoch_s": 1.0}
    assert "| held-out fg 96% bg 99.8% |" in epoch_summary(row, cfg)
    del row["holdout_bg"]
    assert "| held-out fg 96% bg n/a |" in epoch_summary(row, cfg)
    assert "held-out" not in epoch_summary({"epoch": 1, "loss": 0.5}, cfg)
    both = {"holdout_fg": 0.96, "holdout_bg": 0.98, "holdout_strokes_out": 12,
            "holdout_strokes_all": 120}
    assert holdout_result(both, cfg) == ("held-out strokes (12 of 120 strokes, never trained "
                                         "on): 96 % of foreground and 98 % of background "
                                         "pixels right")
    fg_only = {k: v for k, v in both.items() if k != "holdout_bg"}
    assert "96 % of foreground pixels right; background n/a" in holdout_result(fg_only, cfg)
    none = {"holdout_strokes_out": 0, "holdout_strokes_all": 6}
    assert holdout_result(none, cfg).startswith("held-out strokes: n/a (none of 6 strokes")
    assert holdout_result({}, cfg) is None  # a finished run resumed: nothing trained
    assert "off" in holdout_result({}, TrainConfig(holdout_strokes=0))
    assert "off" in holdout_result(both, TrainConfig(method="full"))
    assert holdout_split({L.BACKGROUND: (0, 3), L.FOREGROUND: (2, 20)}) == (
        "held-out strokes: 2 of 23 kept out of training to measure the model (foreground 2 of "
        "20, background none of 3 (too few to spare))")
