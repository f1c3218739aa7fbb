"""Tests of loading model bundles and checkpoints (s2l_tools.training.checkpoint).

A damaged or foreign file must give one line naming the file (an
:class:`S2LError`), never a traceback or a model with wrong weights.
"""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from s2l_tools.errors import S2LError
from s2l_tools.training.checkpoint import (
    CHECKPOINT_FORMAT,
    FORMAT_VERSION,
    MODEL_FORMAT,
    ModelMeta,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
)
from s2l_tools.training.model import build_model

META = ModelMeta(encoder="resnet18", in_channels=2, channel=None, tile=256, overlap=32,
                 threshold=0.65, min_size=12,
                 normalization={"method": "percentile", "low": 2.0, "high": 99.0})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(folder, state_dict): a resnet18 U-Net saved as model.pt and checkpoint.pt."""
    folder = tmp_path_factory.mktemp("run")
    net = build_model(encoder="resnet18", in_channels=2, seed=3)
    with torch.no_grad():  # weights no freshly built model has
        for p in net.parameters():
            p.add_(0.01)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    save_model(folder / "model.pt", sd, META)
    save_checkpoint(folder / "checkpoint.pt", {"model": sd, "meta": asdict(META), "epoch": 4,
                                               "config": {"epochs": 9}})
    return folder, sd


def _same_weights(model, sd) -> None:
    got = model.state_dict()
    assert set(got) == set(sd)
    for k, v in sd.items():
        assert torch.equal(got[k].cpu(), v), k


def _check_error(info, path) -> str:
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg
    return msg


def _bundle(path, **obj) -> None:
    torch.save({"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, **obj}, path)


# ------------------------------------------------------------------ round trips
def test_model_round_trip(saved):
    folder, sd = saved
    model, meta = load_model(folder / "model.pt")
    assert meta == META
    assert not model.training
    _same_weights(model, sd)


def test_run_folder_prefers_model_pt(saved, tmp_path):
    folder, sd = saved
    model, meta = load_model(folder)
    assert meta == META
    _same_weights(model, sd)


def test_checkpoint_round_trip(saved):
    folder, sd = saved
    ckpt = load_checkpoint(folder / "checkpoint.pt")
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 4
    assert ckpt["config"] == {"epochs": 9} and ckpt["meta"] == asdict(META)
    for k, v in sd.items():
        assert torch.equal(ckpt["model"][k], v)
    model, meta = load_model(folder / "checkpoint.pt")  # predict from a checkpoint too
    assert meta == META
    _same_weights(model, sd)


def test_meta_round_trip_ignores_unknown_keys():
    d = {**asdict(META), "added_in_a_later_version": 1}
    assert ModelMeta.from_dict(d) == META
    assert ModelMeta.from_dict(asdict(ModelMeta())) == ModelMeta()


# ------------------------------------------------------------------ damaged or foreign files
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.5, 0.99])
def test_truncated_model(saved, tmp_path, fraction):
    data = (saved[0] / "model.pt").read_bytes()
    path = tmp_path / "model.pt"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(S2LError) as info:
        load_model(path)
    assert "not an s2l-tools model" in _check_error(info, path)


def test_truncated_checkpoint(saved, tmp_path):
    data = (saved[0] / "checkpoint.pt").read_bytes()
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(S2LError) as info:
        load_checkpoint(path)
    _check_error(info, path)


def test_zip_that_is_not_torch(tmp_path):
    import zipfile

    path = tmp_path / "model.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


@pytest.mark.parametrize("obj", [torch.zeros(3), {"state_dict": {}}, [1, 2],
                                 {"format": "something-else"}],
                         ids=["tensor", "dict-without-tag", "list", "other-tag"])
def test_torch_file_without_format_tag(tmp_path, obj):
    path = tmp_path / "model.pt"
    torch.save(obj, path)
    with pytest.raises(S2LError) as info:
        load_model(path)
    assert "no s2l-tools format tag" in _check_error(info, path)


def test_text_file_is_not_a_model(tmp_path):
    path = tmp_path / "model.pt"
    path.write_text("hello")
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


def test_newer_format(tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, format_version=FORMAT_VERSION + 1, state_dict={}, meta={})
    with pytest.raises(S2LError, match="newer s2l-tools") as info:
        load_model(path)
    _check_error(info, path)


def test_model_bundle_is_not_a_checkpoint(saved):
    path = saved[0] / "model.pt"
    with pytest.raises(S2LError, match="not a training checkpoint") as info:
        load_checkpoint(path)
    _check_error(info, path)


def test_missing_file_and_empty_run_folder(tmp_path):
    with pytest.raises(S2LError, match="no such model file") as info:
        load_model(tmp_path / "gone.pt")
    _check_error(info, tmp_path / "gone.pt")
    with pytest.raises(S2LError, match="no model.pt or checkpoint.pt") as info:
        load_model(tmp_path)
    _check_error(info, tmp_path)
    with pytest.raises(S2LError, match="no such checkpoint file"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_weights_of_another_encoder(saved, tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, state_dict=saved[1], meta={**asdict(META), "encoder": "resnet34"})
    with pytest.raises(S2LError, match="do not fit a resnet34 U-Net") as info:
        load_model(path)
    _check_error(info, path)


def test_model_without_meta(tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, state_dict={"w": torch.zeros(1)})
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


def test_model_without_weights(tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, meta=asdict(META))
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


def test_checkpoint_without_meta(saved, tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {"w": torch.zeros(1)}, "epoch": 1})
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


def test_meta_not_a_dict(tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, state_dict={"w": torch.zeros(1)}, meta="resnet18")
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


def test_unknown_encoder_in_meta(tmp_path):
    path = tmp_path / "model.pt"
    _bundle(path, state_dict={"w": torch.zeros(1)}, meta={**asdict(META), "encoder": "vgg"})
    with pytest.raises(S2LError) as info:
        load_model(path)
    _check_error(info, path)


@pytest.mark.parametrize("change, expect", [
    ({"tile": "512"}, "tile is '512', not a whole number"),
    ({"tile": 100}, "tile 100 is not a multiple of 32"),
    ({"overlap": 256}, "overlap 256 is not less than tile 256"),
    ({"in_channels": 0}, "in_channels is 0"),
    ({"threshold": "high"}, "threshold is 'high'"),
    ({"min_size": -1}, "min_size is -1"),
    ({"normalization": [1, 99]}, "normalization is [1, 99], not a mapping"),
    ({"normalization": {"method": "percentile", "low": 99, "high": 1}},
     "normalization percentiles 99, 1"),
    ({"normalization": {"method": "zscore"}}, "normalization method 'zscore' is unknown"),
])
def test_malformed_meta_values(saved, tmp_path, change, expect):
    """Metadata of the wrong type or range was accepted and failed later (internal errors)."""
    path = tmp_path / "model.pt"
    _bundle(path, state_dict=saved[1], meta={**asdict(META), **change})
    with pytest.raises(S2LError) as info:
        load_model(path)
    msg = _check_error(info, path)
    assert expect in msg and "damaged" in msg
