"""Tests of training settings files: ``TrainConfig`` and ``s2l-train --config FILE``.

Nothing here trains: the settings are read with
:func:`s2l_tools.cli.train.config_from_args`, or ``s2l-train`` is run on a
dataset folder that does not exist, so it stops before any work.
"""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from s2l_tools.cli.train import config_from_args, get_parser, main
from s2l_tools.errors import S2LError
from s2l_tools.training.config import PRESETS, TrainConfig


def _args(*argv):
    return get_parser().parse_args([str(a) for a in argv])


def _write(path, obj) -> str:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj), encoding="utf-8")
    return str(path)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "internal error" not in err, err
    return err


@pytest.fixture()
def cfg_file(tmp_path):
    """A config file naming a dataset folder that does not exist (nothing can train)."""

    def make(**settings):
        base = {"data": str(tmp_path / "no_data"), "out": str(tmp_path / "run")}
        return _write(tmp_path / "config.json", {**base, **settings})

    return make


# ------------------------------------------------------------------ reading the file
def test_round_trip_to_json_from_json(tmp_path):
    cfg = TrainConfig(data="d", out="o", val="v", method="pce", encoder="resnet18",
                      channel=2, epochs=7, warmup_epochs=3, ema_alpha=0.3, threshold=0.9,
                      lr=1e-3, crop=128, batch_size=4, samples_per_epoch=16, amp=False,
                      val_every=2, address="auto", store="sharded")
    path = tmp_path / "config.json"
    cfg.to_json(path)
    back = TrainConfig.from_json(path)
    assert back == cfg
    # every setting is written, and nothing else
    assert set(json.loads(path.read_text())) == {f.name for f in fields(TrainConfig)}
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_defaults_round_trip(tmp_path):
    path = tmp_path / "config.json"
    TrainConfig().to_json(path)
    assert TrainConfig.from_json(path) == TrainConfig()
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob(".*"))


def test_config_file_then_flags(tmp_path):
    """Defaults < the file < flags given on the command line."""
    path = _write(tmp_path / "c.json", {"data": "from_file", "out": "run_file", "epochs": 7,
                                       "warmup_epochs": 3, "lr": 0.01, "amp": False})
    cfg = config_from_args(_args("--config", path))
    assert (cfg.data, cfg.out, cfg.epochs, cfg.lr, cfg.amp) == ("from_file", "run_file", 7,
                                                                 0.01, False)
    assert cfg.crop == TrainConfig().crop  # not in the file: the default
    cfg = config_from_args(_args("data_flag", "--out", "run_flag", "--config", path,
                                 "--epochs", "5", "--amp"))
    assert (cfg.data, cfg.out, cfg.epochs, cfg.lr, cfg.amp) == ("data_flag", "run_flag", 5,
                                                                 0.01, True)


def test_epochs_alone_takes_half_as_warm_up():
    """`--epochs 20` alone must not be refused for the default warm-up of 100 (issue 16's
    check): the warm-up becomes half the epochs, as the paper's 100 of 200."""
    cfg = config_from_args(_args("d", "--out", "o", "--epochs", "20"))
    assert (cfg.epochs, cfg.warmup_epochs) == (20, 10)
    cfg = config_from_args(_args("d", "--out", "o", "--epochs", "150"))
    assert cfg.warmup_epochs == TrainConfig().warmup_epochs  # fits: kept
    with pytest.raises(S2LError, match="longer than the run"):
        config_from_args(_args("d", "--out", "o", "--epochs", "20", "--warmup-epochs", "30"))


def test_preset_between_file_and_flags(tmp_path):
    path = _write(tmp_path / "c.json", {"data": "d", "out": "o", "epochs": 7, "crop": 64})
    cfg = config_from_args(_args("--config", path, "--preset", "laptop", "--batch-size", "2"))
    assert cfg.epochs == PRESETS["laptop"]["epochs"] and cfg.crop == PRESETS["laptop"]["crop"]
    assert cfg.batch_size == 2


def test_invalid_json(tmp_path, capsys):
    path = _write(tmp_path / "c.json", '{"epochs": 3,')
    assert main(["--config", path]) == 1
    err = _one_line_error(capsys)
    assert "c.json" in err and "not valid JSON" in err


def test_not_utf8(tmp_path, capsys):
    path = tmp_path / "c.json"
    path.write_bytes(b"\xff\xfe\x00{")
    assert main(["--config", str(path)]) == 1
    assert "c.json" in _one_line_error(capsys)


@pytest.mark.parametrize("text", ["[1, 2]", '"epochs"', "3", "null"])
def test_json_not_an_object(tmp_path, capsys, text):
    path = _write(tmp_path / "c.json", text)
    assert main(["--config", path]) == 1
    err = _one_line_error(capsys)
    assert "c.json" in err and "JSON object" in err


def test_unknown_keys(tmp_path, capsys):
    path = _write(tmp_path / "c.json", {"data": "d", "out": "o", "epoch": 3, "learning_rate": 1})
    assert main(["--config", path]) == 1
    err = _one_line_error(capsys)
    assert "c.json" in err and "epoch" in err and "learning_rate" in err
    with pytest.raises(S2LError, match="unknown setting"):
        TrainConfig.from_dict({"epoch": 3})


def test_missing_config_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "gone.json")]) == 1
    err = _one_line_error(capsys)
    assert "gone.json" in err and "no such config file" in err


def test_config_is_a_folder(tmp_path, capsys):
    assert main(["--config", str(tmp_path)]) == 1
    assert str(tmp_path) in _one_line_error(capsys)


def test_value_out_of_range_in_file(cfg_file, tmp_path, capsys):
    assert main(["--config", cfg_file(epochs=0)]) == 1
    err = _one_line_error(capsys)
    assert "--epochs 0" in err and "at least 1" in err
    assert not (tmp_path / "run").exists()  # validated before anything is written


@pytest.mark.parametrize("setting, value", [
    ("epochs", "ten"), ("epochs", None), ("epochs", 2.5), ("lr", "0.001"), ("amp", "no"),
])
def test_wrong_type_in_file(cfg_file, tmp_path, capsys, setting, value):
    assert main(["--config", cfg_file(**{setting: value})]) == 1
    # the file's problem, found before the (missing) dataset is looked at
    err = _one_line_error(capsys).replace(str(tmp_path), "DIR")
    assert "no_data" not in err and setting.replace("_", "-") in err


def test_no_dataset_given(tmp_path, capsys):
    path = _write(tmp_path / "c.json", {"epochs": 3})
    assert main(["--config", path]) == 1
    assert "no dataset given" in _one_line_error(capsys)


# ------------------------------------------------------------------ validate()
@pytest.mark.parametrize("setting, value, flag, why", [
    ("epochs", 0, "--epochs", "at least 1"),
    ("batch_size", 0, "--batch-size", "at least 1"),
    ("ensemble_every", 0, "--ensemble-every", "at least 1"),
    ("checkpoint_every", 0, "--checkpoint-every", "at least 1"),
    ("restart_epochs", 0, "--restart-epochs", "at least 1"),
    ("warmup_epochs", -1, "--warmup-epochs", "0 or more"),
    ("ema_alpha", 0.0, "--ema-alpha", "(0, 1]"),
    ("ema_alpha", 1.5, "--ema-alpha", "(0, 1]"),
    ("threshold", 0.4, "--threshold", "[0.5, 1)"),
    ("threshold", 1.0, "--threshold", "[0.5, 1)"),
    ("pseudo_weight", -0.1, "--pseudo-weight", "0 or more"),
    ("pseudo_margin", -1, "--pseudo-margin", "0 or more"),
    ("noise_aug", -0.1, "--noise-aug", "[0, 1]"),
    ("noise_aug", 2.0, "--noise-aug", "[0, 1]"),
    ("gain_aug", 0.5, "--gain-aug", "[1, 10]"),
    ("gain_aug", float("nan"), "--gain-aug", "[1, 10]"),
    ("lr", 0.0, "--lr", "positive"),
    ("crop", 100, "--crop", "multiple of 32"),
    ("crop", 0, "--crop", "multiple of 32"),
    ("samples_per_epoch", 0, "--samples-per-epoch", "at least 1"),
    ("num_workers", -1, "--num-workers", "0 (no Ray)"),
    ("cpus_per_worker", 0, "--cpus-per-worker", "at least 1"),
    ("max_failures", -2, "--max-failures", "-1"),
    ("device", "tpu", "--device", "auto, cpu or cuda"),
    ("method", "magic", "--method", "s2l, pce"),
    ("encoder", "vgg16", "--encoder", "resnet18"),
    ("store", "cloud", "--store", "replicated"),
    ("fast_start", "svm", "--fast-start", "forest"),
    # issue 16: accepted before, and some failed only after minutes of training
    ("weight_decay", -1e-4, "--weight-decay", "0 (none) or more"),
    ("decoder_lr_mult", -10.0, "--decoder-lr-mult", "positive"),
    ("decoder_lr_mult", 0.0, "--decoder-lr-mult", "positive"),
    ("min_size", -1, "--min-size", "0 or more"),
    ("channel", -1, "--channel", "0 or more"),
    ("val_every", 0, "--val-every", "at least 1"),
    ("panel_images", -1, "--panel-images", "0 (none) or more"),
    ("seed", -1, "--seed", "0 or more"),
    ("warmup_epochs", 201, "--warmup-epochs", "longer than the run (--epochs 200)"),
    ("lr", float("nan"), "--lr", "finite"),
    ("pseudo_weight", float("inf"), "--pseudo-weight", "finite"),
    ("weight_decay", float("nan"), "--weight-decay", "finite"),
    ("crf_weight", float("inf"), "--crf-weight", "finite"),
    ("grabcut_agreement", 1.5, "--grabcut-agreement", "[0, 1]"),
    ("grabcut_agreement", -0.1, "--grabcut-agreement", "[0, 1]"),
    ("grabcut_agreement", float("nan"), "--grabcut-agreement", "finite"),
    ("mask_threshold", 1.0, "--mask-threshold", "[0, 1)"),
    ("mask_threshold", -0.1, "--mask-threshold", "[0, 1)"),
    ("mask_threshold", float("nan"), "--mask-threshold", "finite"),
])
def test_validate_ranges(setting, value, flag, why):
    cfg = TrainConfig(data="d", out="o", **{setting: value})
    with pytest.raises(S2LError) as info:
        cfg.validate()
    msg = str(info.value)
    assert msg.startswith(f"{flag} {value}:") and why in msg and "\n" not in msg


@pytest.mark.parametrize("value", [-0.1, 0.0, 0.5, 0.95, 1.0, 1.5, float("nan")])
def test_one_threshold_range_for_training_and_prediction(value):
    """--mask-threshold saves the threshold that s2l-predict, the model-file check and the
    CellProfiler module use: a value one accepts, all accept (they call threshold_problem)."""
    from s2l_tools.inference.onnx import meta_problem, threshold_problem

    cfg = TrainConfig(data="d", out="o", mask_threshold=value)
    try:
        cfg.validate()
        trains = True
    except S2LError:
        trains = False
    predicts = threshold_problem(value) is None
    assert trains == predicts == (meta_problem({"threshold": value}) is None)
    assert predicts == (0 <= value < 1)


def test_fast_start_needs_s2l():
    with pytest.raises(S2LError, match="--fast-start forest: .*--method pce"):
        TrainConfig(method="pce", fast_start="forest").validate()


@pytest.mark.parametrize("settings", [
    {}, {"threshold": 0.5}, {"ema_alpha": 1.0}, {"warmup_epochs": 0}, {"max_failures": -1},
    {"device": "cuda:1"}, {"crop": 32}, {"pseudo_weight": 0.0}, {"method": "full"},
    {"fast_start": "forest+grabcut"}, *({"preset": p} for p in sorted(PRESETS)),
    {"warmup_epochs": 200}, {"epochs": 2, "warmup_epochs": 5, "method": "pce"},
    {"epochs": 2, "warmup_epochs": 5, "fast_start": "forest"}, {"weight_decay": 0.0},
    {"min_size": 0}, {"channel": 0}, {"grabcut_agreement": 0.0}, {"grabcut_agreement": 1.0},
    {"mask_threshold": 0.0}, {"mask_threshold": 0.95},
])
def test_validate_accepts_edges(settings):
    settings = dict(settings)
    preset = settings.pop("preset", None)
    cfg = TrainConfig(data="d", out="o", **(PRESETS[preset] if preset else {}), **settings)
    assert cfg.validate() is cfg


@pytest.mark.parametrize("tile", [0, 100])
def test_validate_tile(tile):
    with pytest.raises(S2LError, match=f"--tile {tile}:"):
        TrainConfig(data="d", out="o", tile=tile).validate()


def test_validate_loader_workers():
    with pytest.raises(S2LError, match="--loader-workers -1:"):
        TrainConfig(data="d", out="o", loader_workers=-1).validate()


def test_flag_out_of_range_on_command_line(tmp_path, capsys):
    assert main([str(tmp_path / "no_data"), "--out", str(tmp_path / "run"),
                 "--crop", "100"]) == 1
    err = _one_line_error(capsys)
    assert "--crop 100" in err
    assert not (tmp_path / "run").exists()


def test_config_file_values_are_validated(tmp_path, capsys):
    """A config file's values get the same range checks as the flags."""
    path = _write(tmp_path / "c.json", {"weight_decay": -0.5})
    assert main([str(tmp_path), "--config", path, "--out", str(tmp_path / "run")]) == 1
    assert "--weight-decay -0.5: must be 0 (none) or more" in _one_line_error(capsys)
    assert not (tmp_path / "run").exists()
