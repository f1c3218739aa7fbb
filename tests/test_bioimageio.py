"""BioImage Model Zoo packages: s2l-export --format bioimageio and s2l-predict model.zip.

One package is written (a tiny random resnet18 U-Net in a run folder with a
dataset, a config and metrics) and checked with the real bioimageio.core, with
every network connection refused: the export and validation must work offline.
"""

from __future__ import annotations

import contextlib
import io
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

pytest.importorskip("bioimageio.core")
yaml = pytest.importorskip("yaml")

from s2l_tools.cli.export import main as export_main  # noqa: E402
from s2l_tools.cli.predict import main as predict_main  # noqa: E402
from s2l_tools.errors import S2LError  # noqa: E402
from s2l_tools.inference.bioimageio import (  # noqa: E402
    WEIGHT_FORMATS,
    export_bioimageio,
    load_bioimageio,
)
from s2l_tools.training.checkpoint import ModelMeta, save_model  # noqa: E402
from s2l_tools.training.config import TrainConfig  # noqa: E402
from s2l_tools.training.model import build_model  # noqa: E402

META = ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16, threshold=0.5,
                 min_size=4, channel=None,
                 normalization={"method": "percentile", "low": 2.0, "high": 99.5})


def _blob_image(rng, h: int, w: int) -> np.ndarray:
    """uint16 (h, w): bright discs on a noisy background."""
    yy, xx = np.mgrid[:h, :w]
    img = np.zeros((h, w))
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 1.0
    img += 0.1 * rng.standard_normal((h, w))
    return (1000 + 2000 * img).clip(0, 65535).astype(np.uint16)


class _NoNetwork:
    """Refuse every network connection (the package must be written and tested offline)."""

    def __enter__(self):
        self.mp = pytest.MonkeyPatch()

        def refuse(*args, **kwargs):
            raise OSError("network access refused by the test")

        self.mp.setattr(socket.socket, "connect", refuse)
        self.mp.setattr(socket, "create_connection", refuse)
        return self

    def __exit__(self, *exc):
        self.mp.undo()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run folder: model.pt, config.json (pointing at a dataset) and metrics.csv."""
    root = tmp_path_factory.mktemp("bio")
    data = root / "data"
    (data / "images").mkdir(parents=True)
    (data / "scribbles").mkdir()
    rng = np.random.default_rng(3)
    img = _blob_image(rng, 100, 140)
    tifffile.imwrite(data / "images" / "a.tif", img)
    scr = np.zeros(img.shape, np.uint8)
    scr[10, 10:60] = 1
    scr[50:53, 70] = 2
    tifffile.imwrite(data / "scribbles" / "a.tif", scr)
    run = root / "run"
    run.mkdir()
    save_model(run / "model.pt", build_model(encoder="resnet18", in_channels=1,
                                             seed=0).state_dict(), META)
    TrainConfig(data=str(data), out=str(run), encoder="resnet18", epochs=3).to_json(
        run / "config.json")
    (run / "metrics.csv").write_text("epoch,loss,val_iou,val_mdice,val_f1_50\n"
                                     "1,0.5,,,\n2,0.4,0.61,0.55,0.7\n")
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory) -> tuple[Path, str]:
    """s2l-export RUN --format bioimageio, offline: the package and what s2l-export said.

    The export runs bioimageio.core's ``test_model`` on the CPU for every weight format
    before it writes the file.
    """
    out = tmp_path_factory.mktemp("pkg") / "model.zip"
    said = io.StringIO()
    with _NoNetwork(), contextlib.redirect_stdout(said):
        rc = export_main([str(run_dir), "--format", "bioimageio", "--out", str(out),
                          "--author", "A. Biologist", "--name", "Nuclei from scribbles"])
    assert rc == 0
    return out, said.getvalue()


@pytest.fixture(scope="module")
def package(exported) -> Path:
    return exported[0]


def _member(zip_path: Path, name: str) -> bytes:
    with zipfile.ZipFile(zip_path) as zf:
        return zf.read(name)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: "), err
    assert "\n" not in err
    return err


@pytest.mark.slow
def test_package_describes_the_model(package, run_dir):
    rdf = yaml.safe_load(_member(package, "rdf.yaml"))
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5")
    assert rdf["name"] == "Nuclei from scribbles"
    assert rdf["authors"] == [{"name": "A. Biologist"}]
    assert rdf["license"] == "BSD-3-Clause" and "segmentation" in rdf["tags"]
    assert any("Scribble2Label" in c["text"] and c.get("doi") for c in rdf["cite"])
    assert any("s2l-tools" in c["text"] for c in rdf["cite"])
    (inp,), (out,) = rdf["inputs"], rdf["outputs"]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][2]["size"] == {"min": 32, "step": 32} == inp["axes"][3]["size"]
    (scale,) = [p["kwargs"] for p in inp["preprocessing"] if p["id"] == "scale_range"]
    assert float(scale.pop("eps")) == 1e-6  # "1e-06": a string to PyYAML's YAML 1.1
    assert scale == {"axes": ["y", "x"], "min_percentile": 2.0, "max_percentile": 99.5}
    # one output channel, the foreground probability, with the softmax inside the network
    assert out["axes"][1]["channel_names"] == ["foreground"]
    assert [p["id"] for p in out.get("postprocessing", [])] in ([], ["ensure_dtype"])
    assert set(rdf["weights"]) == set(WEIGHT_FORMATS)
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert arch["callable"] == "ForegroundUnet"
    assert b"segmentation_models_pytorch" in _member(package, arch["source"])
    assert arch["kwargs"] == {"encoder_name": "resnet18", "encoder_weights": None,
                              "in_channels": 1, "classes": 2,
                              "decoder_attention_type": "scse"}
    env = _member(package, rdf["weights"]["pytorch_state_dict"]["dependencies"]["source"])
    assert b"segmentation-models-pytorch" in env
    assert rdf["config"]["s2l"]["meta"]["threshold"] == META.threshold
    readme = _member(package, rdf["documentation"]["source"]).decode()
    # data (1 image, 50 background and 3 foreground scribbled pixels), settings, scores
    assert "50 background and 3 foreground" in readme
    assert "epochs: 3" in readme and "val_iou: 0.61" in readme
    x = np.load(io.BytesIO(_member(package, inp["test_tensor"]["source"])))
    y = np.load(io.BytesIO(_member(package, out["test_tensor"]["source"])))
    assert x.shape == (1, 1, 96, 128) and y.shape == (1, 1, 96, 128)  # crops of 100 x 140
    assert y.min() >= 0 and y.max() <= 1 and y.std() > 0
    # the test input is the middle of the training image, as stored
    np.testing.assert_array_equal(x[0, 0], tifffile.imread(run_dir.parent / "data" / "images"
                                                           / "a.tif")[2:98, 6:134])


@pytest.mark.slow
def test_export_passed_bioimageio_test_for_every_weight_format(exported):
    package, said = exported
    assert package.is_file()
    assert "bioimageio.core test passed on the CPU for pytorch_state_dict, torchscript, onnx" \
        in " ".join(said.split())


@pytest.mark.slow
def test_bioimageio_core_test_passes_offline(package):
    """bioimageio.core's own test of the written file (``bioimageio test``), once more."""
    from bioimageio.core import test_model

    with _NoNetwork():
        summary = test_model(package, weight_format="onnx", devices=["cpu"])
    assert summary.status == "passed", summary.format()


@pytest.mark.slow
def test_package_output_equals_s2l_predict(package, run_dir, tmp_path, capsys):
    """The package's test output is s2l-predict's probability on its test input (1e-4),
    predicted once (--no-flips: a package's test output is one pass of the network)."""
    x = np.load(io.BytesIO(_member(package, "test_input.npy")))
    y = np.load(io.BytesIO(_member(package, "test_output.npy")))
    images = tmp_path / "in"
    images.mkdir()
    tifffile.imwrite(images / "t.tif", x[0, 0])
    probs = {}
    for name, model in (("pt", run_dir), ("zip", package)):
        out = tmp_path / name
        rc = predict_main([str(model), str(images), "--out", str(out), "--prob",
                           "--tile", "256", "--device", "cpu", "--no-flips"])
        assert rc == 0, capsys.readouterr().err
        probs[name] = tifffile.imread(out / "t_prob.tif")
    np.testing.assert_allclose(probs["pt"], y[0, 0], atol=1e-4, rtol=0)
    np.testing.assert_allclose(probs["zip"], y[0, 0], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_predict_with_package_tiles_like_the_run(package, run_dir, tmp_path, capsys):
    """Our tiling (the model's 64-pixel tiles), labels and ROI sets from a package."""
    images = tmp_path / "in"
    images.mkdir()
    tifffile.imwrite(images / "big.tif", _blob_image(np.random.default_rng(5), 150, 210))
    outs = {}
    for name, model in (("pt", run_dir), ("zip", package)):
        out = tmp_path / name
        rc = predict_main([str(model), str(images), "--out", str(out), "--prob", "--rois",
                           "--device", "cpu"])
        assert rc == 0, capsys.readouterr().err
        outs[name] = out
    np.testing.assert_allclose(tifffile.imread(outs["zip"] / "big_prob.tif"),
                               tifffile.imread(outs["pt"] / "big_prob.tif"), atol=1e-4, rtol=0)
    np.testing.assert_array_equal(tifffile.imread(outs["zip"] / "big.tif"),
                                  tifffile.imread(outs["pt"] / "big.tif"))
    assert (outs["zip"] / "big_rois.zip").is_file()


def _edited(package: Path, dst: Path, edit, files: dict | None = None) -> Path:
    """A copy of ``package`` with ``edit(rdf)`` applied and ``files`` added or replaced
    (only the ONNX weights kept: a smaller file to check)."""
    files = dict(files or {})
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(dst, "w") as out:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        dropped = {w["source"] for f, w in rdf["weights"].items() if f != "onnx"}
        dropped.add(rdf["weights"]["pytorch_state_dict"]["architecture"]["source"])
        dropped.add(rdf["weights"]["pytorch_state_dict"]["dependencies"]["source"])
        rdf["weights"] = {"onnx": dict(rdf["weights"]["onnx"])}
        rdf["weights"]["onnx"].pop("parent", None)
        edit(rdf)
        for item in src.infolist():
            if item.filename not in dropped and item.filename != "rdf.yaml" and \
                    item.filename not in files:
                out.writestr(item, src.read(item.filename))
        for name, data in files.items():
            out.writestr(name, data)
        out.writestr("rdf.yaml", yaml.safe_dump(rdf, sort_keys=False))
    return dst


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _second_output(rdf):
    extra = dict(rdf["outputs"][0], id="probability2")
    rdf["outputs"].append(extra)


def _three_d(rdf):
    for tensor in (rdf["inputs"][0], rdf["outputs"][0]):
        tensor["axes"].insert(2, {"type": "space", "id": "z", "size": 1} if tensor is
                              rdf["inputs"][0] else
                              {"type": "space", "id": "z",
                               "size": {"tensor_id": "raw", "axis_id": "z"}})
        tensor["test_tensor"].pop("sha256", None)
        tensor.pop("sample_tensor", None)


def _broken(rdf):
    rdf["inputs"][0]["axes"][2]["size"]["step"] = 0


@pytest.mark.slow
@pytest.mark.parametrize("case, expected", [
    ("multi-output", "1 input(s) and 2 output(s)"),
    ("3-D", "a 3-D model (input axis 'z')"),
    ("invalid", "fails validation"),
])
def test_predict_refuses_unsuitable_packages(package, tmp_path, capsys, case, expected):
    x = np.load(io.BytesIO(_member(package, "test_input.npy")))
    y = np.load(io.BytesIO(_member(package, "test_output.npy")))
    edit, files = {
        "multi-output": (_second_output, None),
        "3-D": (_three_d, {"test_input.npy": _npy(x[:, :, None]),
                           "test_output.npy": _npy(y[:, :, None])}),
        "invalid": (_broken, None),
    }[case]
    bad = _edited(package, tmp_path / "bad.zip", edit, files)
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, x[0, 0])
    rc = predict_main([str(bad), str(image), "--out", str(tmp_path / "out")])
    assert rc == 1
    err = _one_line_error(capsys)
    assert str(bad) in err and expected in err, err
    assert not (tmp_path / "out").exists()


def test_predict_refuses_a_zip_that_is_not_a_model(tmp_path, capsys):
    image = tmp_path / "a.tif"
    tifffile.imwrite(image, _blob_image(np.random.default_rng(1), 40, 40))
    rois = tmp_path / "RoiSet.zip"  # a zip, but no rdf.yaml
    with zipfile.ZipFile(rois, "w") as zf:
        zf.writestr("cell-1.roi", b"Iout")
    text = tmp_path / "notes.zip"
    text.write_text("not a zip")
    dataset = tmp_path / "dataset.zip"  # a valid bioimage.io resource that is not a model
    with zipfile.ZipFile(dataset, "w") as zf:
        zf.writestr("rdf.yaml", yaml.safe_dump({
            "type": "dataset", "format_version": "0.3.0", "name": "some nuclei",
            "description": "images", "authors": [{"name": "A. Biologist"}],
            "cite": [{"text": "a paper", "doi": "10.1007/978-3-030-59710-8_2"}],
            "license": "CC-BY-4.0", "tags": ["nuclei"]}))
    for bad, expected in ((rois, "without rdf.yaml"), (text, "not a zip file"),
                          (dataset, "not a model")):
        with _NoNetwork():
            rc = predict_main([str(bad), str(image), "--out", str(tmp_path / "out")])
        assert rc == 1
        err = _one_line_error(capsys)
        assert str(bad) in err and expected in err, err


def test_export_checks_its_options_first(run_dir, tmp_path, capsys):
    assert export_main([str(run_dir), "--format", "bioimageio", "--out",
                        str(tmp_path / "m.onnx")]) == 1
    assert "must end in .zip" in _one_line_error(capsys)
    model_only = tmp_path / "alone"
    model_only.mkdir()
    (model_only / "model.pt").write_bytes((run_dir / "model.pt").read_bytes())
    assert export_main([str(model_only / "model.pt"), "--format", "bioimageio", "--out",
                        str(tmp_path / "m.zip")]) == 1
    assert "--test-image FILE" in _one_line_error(capsys)
    assert not (tmp_path / "m.zip").exists()


def test_export_refuses_normalisation_the_spec_cannot_say(tmp_path):
    net = build_model(encoder="resnet18", in_channels=1, seed=0)
    meta = ModelMeta(encoder="resnet18", in_channels=1,
                     normalization={"method": "percentile", "low": 0.0, "high": 1.0})
    with pytest.raises(S2LError, match="upper percentile above 1; export a model trained by "
                       "s2l-train"):
        export_bioimageio(net, meta, tmp_path / "m.zip",
                          test_image=np.zeros((1, 64, 64), np.uint16))
    assert not (tmp_path / "m.zip").exists()


def test_load_refuses_missing_package(tmp_path):
    with pytest.raises(S2LError, match="no such model file"):
        load_bioimageio(tmp_path / "nothing.zip")
    assert torch.__version__  # torch stays importable beside bioimageio.core


def _pointwise_package(folder: Path, preprocessing) -> Path:
    """A colleague's package: TorchScript, no channel axis, sizes 16 + 8k, sigmoid output.

    The network maps ``x`` ``(N, H, W)`` to ``2 x - 1`` ``(N, 1, H, W)``; with the
    preprocessing ``scale_range`` (1-99 %) then ``scale_linear`` (0.5 x + 0.25) and the
    postprocessing ``sigmoid`` its output is ``sigmoid(n - 0.5)``, ``n`` the normalised
    image: a per-pixel function, so tiling must give it exactly.
    """
    from bioimageio.spec import save_bioimageio_package
    from bioimageio.spec.model import v0_5

    class Pointwise(torch.nn.Module):
        def forward(self, x):
            return (2.0 * x - 1.0)[:, None]

    torch.jit.script(Pointwise()).save(str(folder / "pointwise.pt"))
    x = np.random.default_rng(0).uniform(0, 500, (1, 40, 48)).astype(np.float32)
    np.save(folder / "in.npy", x)
    np.save(folder / "out.npy", _pointwise_expected(x[0])[None, None])
    (folder / "README.md").write_text("# pointwise\n")
    size = v0_5.ParameterizedSize(min=16, step=8)
    y_id, x_id, in_id = v0_5.AxisId("y"), v0_5.AxisId("x"), v0_5.TensorId("image")
    descr = v0_5.ModelDescr(
        name="pointwise", description="sigmoid of the normalised image",
        authors=[v0_5.Author(name="A. Colleague")],
        cite=[v0_5.CiteEntry(text="a paper", doi=v0_5.Doi("10.1007/978-3-030-59710-8_2"))],
        license=v0_5.LicenseId("MIT"), documentation=v0_5.FileDescr(source=folder / "README.md"),
        inputs=[v0_5.InputTensorDescr(
            id=in_id, test_tensor=v0_5.FileDescr(source=folder / "in.npy"),
            axes=[v0_5.BatchAxis(), v0_5.SpaceInputAxis(id=y_id, size=size),
                  v0_5.SpaceInputAxis(id=x_id, size=size)],
            preprocessing=preprocessing(v0_5, (y_id, x_id)))],
        outputs=[v0_5.OutputTensorDescr(
            id=v0_5.TensorId("cells"), test_tensor=v0_5.FileDescr(source=folder / "out.npy"),
            axes=[v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=["cells"]),
                  v0_5.SpaceOutputAxis(id=y_id, size=v0_5.SizeReference(tensor_id=in_id,
                                                                         axis_id=y_id)),
                  v0_5.SpaceOutputAxis(id=x_id, size=v0_5.SizeReference(tensor_id=in_id,
                                                                         axis_id=x_id))],
            postprocessing=[v0_5.SigmoidDescr()])],
        weights=v0_5.WeightsDescr(torchscript=v0_5.TorchscriptWeightsDescr(
            source=folder / "pointwise.pt",
            pytorch_version=v0_5.Version(torch.__version__.split("+")[0]))),
    )
    return save_bioimageio_package(descr, output_path=folder / "pointwise.zip")


def _pointwise_expected(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99])
    n = (img - lo) / (hi - lo + 1e-6)
    return (1 / (1 + np.exp(-(n - 0.5)))).astype(np.float32)


def _percentile_then_linear(v0_5, axes):
    return [v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
                axes=axes, min_percentile=1.0, max_percentile=99.0)),
            v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=0.5, offset=0.25))]


def _mean_std(v0_5, axes):
    return [v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=axes))]


def test_predict_runs_a_colleagues_package(tmp_path, capsys):
    """Another layout (no channel axis, sizes 16 + 8k, its own pre- and postprocessing):
    our tiling (tiles of 64, padded to sizes the model takes) gives its output exactly."""
    package = _pointwise_package(tmp_path, _percentile_then_linear)
    img = np.random.default_rng(1).uniform(0, 500, (70, 93)).astype(np.float32)
    tifffile.imwrite(tmp_path / "a.tif", img)
    with _NoNetwork():
        rc = predict_main([str(package), str(tmp_path / "a.tif"), "--out",
                           str(tmp_path / "pred"), "--prob", "--rois", "--tile", "64",
                           "--overlap", "16"])
    assert rc == 0, capsys.readouterr().err
    prob = tifffile.imread(tmp_path / "pred" / "a_prob.tif")
    np.testing.assert_allclose(prob, _pointwise_expected(img), atol=1e-5, rtol=0)
    labels = tifffile.imread(tmp_path / "pred" / "a.tif")
    assert labels.max() >= 1 and (tmp_path / "pred" / "a_rois.zip").is_file()


def test_predict_refuses_whole_image_statistics_it_cannot_tile(tmp_path, capsys):
    package = _pointwise_package(tmp_path, _mean_std)
    tifffile.imwrite(tmp_path / "a.tif", np.ones((40, 40), np.float32))
    rc = predict_main([str(package), str(tmp_path / "a.tif"), "--out", str(tmp_path / "o")])
    assert rc == 1
    err = _one_line_error(capsys)
    assert "preprocessing 'zero_mean_unit_variance'" in err and "bioimageio predict" in err
