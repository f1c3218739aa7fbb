from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from s2l_tools.training.checkpoint import ModelMeta, save_model
from s2l_tools.errors import S2LError
from s2l_tools.cli.export import main
from s2l_tools.inference.export import export_onnx, meta_from_props, read_onnx_meta
from s2l_tools.training.model import build_model
from s2l_tools.inference.predict import predict_probability

ort = pytest.importorskip("onnxruntime")

DSB_VAL = Path("/work/shared/data/dsb2018/fluo/val/images")


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return build_model(encoder="resnet18", in_channels=1, seed=0).eval()


@pytest.fixture(scope="module")
def meta() -> ModelMeta:
    return ModelMeta(encoder="resnet18", in_channels=1, tile=64, overlap=16, threshold=0.4,
                     min_size=12, channel=0,
                     normalization={"method": "percentile", "low": 2.0, "high": 99.5})


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory, model, meta) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    assert export_onnx(model, meta, path) == path
    return path


@pytest.fixture(scope="module")
def session(onnx_path):
    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _torch_prob(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return torch.softmax(model(torch.from_numpy(x)), 1).numpy()


def _pad32(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[-2:]
    return np.pad(x, ((0, 0), (0, 0), (0, -h % 32), (0, -w % 32)), mode="reflect")


def test_graph_io(session):
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert inp.name == "image" and inp.type == "tensor(float)"
    assert inp.shape == ["batch", 1, "height", "width"]
    assert out.name == "probability" and out.shape == ["batch", 2, "height", "width"]


@pytest.mark.parametrize("shape", [(1, 1, 50, 90), (2, 1, 77, 139)])  # -> 64x96, 96x160
def test_onnxruntime_matches_torch(model, session, shape):
    x = _pad32(np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32))
    got = session.run(["probability"], {"image": x})[0]
    want = _torch_prob(model, x)
    assert got.shape == (shape[0], 2, *x.shape[2:])
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # softmax is in the graph
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.dsb
@pytest.mark.skipif(not DSB_VAL.is_dir(), reason="no DSB2018 validation images")
def test_onnxruntime_matches_torch_on_real_image(model, session):
    from s2l_tools.io.images import list_images, read_image

    x = read_image(list_images(DSB_VAL)[0], channel=None)[:1]
    h, w = (max(32, n // 32 * 32) for n in x.shape[1:])
    x = _pad32(x[None, :, :h, :w])
    got = session.run(["probability"], {"image": x})[0]
    np.testing.assert_allclose(got, _torch_prob(model, x), rtol=1e-3, atol=1e-3)


def test_tiled_prediction_through_onnxruntime(model, session, meta):
    """The prediction code runs an ONNX Runtime session like a torch model."""
    x = np.random.default_rng(3).standard_normal((1, 70, 93)).astype(np.float32)

    def fn(batch):
        return session.run(["probability"], {"image": batch})[0]

    got = predict_probability(fn, x, meta)
    want = predict_probability(model, x, meta, device="cpu")
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


def test_metadata_round_trip(onnx_path, session, meta):
    assert ModelMeta.from_dict(read_onnx_meta(onnx_path)) == meta
    assert read_onnx_meta(onnx_path) == asdict(meta)
    props = session.get_modelmeta().custom_metadata_map  # no onnx package needed
    assert meta_from_props(props) == asdict(meta)
    assert props["s2l.in_channels"] == "1" and props["s2l.classes"] == "2"
    assert props["s2l.tile"] == "64" and float(props["s2l.threshold"]) == 0.4
    assert props["s2l.version"] == meta.s2l_version
    assert props["s2l.normalization"] == '{"high": 99.5, "low": 2.0, "method": "percentile"}'


def test_read_onnx_meta_not_ours(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(500))
    with pytest.raises(S2LError, match="not an ONNX model"):
        read_onnx_meta(junk)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    other = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(other))
    with pytest.raises(S2LError, match="without s2l-tools metadata"):
        read_onnx_meta(other)
    with pytest.raises(S2LError, match="no such model file"):
        read_onnx_meta(tmp_path / "missing.onnx")


def test_one_error_type_for_a_bad_model_file(tmp_path):
    """read_onnx_meta raised S2LError and onnx_inference.read_meta ValueError for the
    same file; both now raise ModelLoadError (an S2LError and a ValueError), same text."""
    import onnx
    from onnx import TensorProto, helper

    from s2l_tools.inference import onnx as oi

    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all\n")
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    foreign = tmp_path / "foreign.onnx"
    onnx.save(helper.make_model(graph), str(foreign))
    for path in (junk, foreign, tmp_path / "missing.onnx"):
        messages = []
        for reader in (read_onnx_meta, oi.read_meta):
            with pytest.raises(oi.ModelLoadError) as err:
                reader(path)
            assert isinstance(err.value, S2LError) and isinstance(err.value, ValueError)
            messages.append(str(err.value))
        assert messages[0] == messages[1] and "\n" not in messages[0]
        assert messages[0].startswith(f"{path}: ")


@pytest.mark.parametrize("change, match", [
    ({"s2l.format_version": "3"}, "written by a newer s2l-tools .format 3.; update"),
    ({"s2l.meta": "{not json"}, "damaged s2l-tools metadata"),
    ({"s2l.meta": "[1, 2]"}, r"damaged s2l-tools metadata \(s2l.meta has no in_channels"),
    ({"s2l.format": "something-else"}, "without s2l-tools metadata"),
])
def test_meta_from_props_refuses(session, change, match):
    props = {**session.get_modelmeta().custom_metadata_map, **change}
    with pytest.raises(S2LError, match=match):
        meta_from_props(props, source="m.onnx")


def test_export_writes_the_keys_the_reader_reads(onnx_path):
    """One definition of the format: onnx_inference's names and keys are in the file."""
    from s2l_tools.inference import onnx as oi

    props = oi.read_props(onnx_path)
    assert props[oi.FORMAT_KEY] == oi.FORMAT
    assert props[oi.FORMAT_VERSION_KEY] == "1"  # no diameter: readable by older readers
    assert props[oi.INPUT_KEY] == oi.INPUT_NAME and props[oi.OUTPUT_KEY] == oi.OUTPUT_NAME
    assert props["s2l.pad_multiple"] == str(oi.PAD_MULTIPLE)
    meta = oi.read_meta(onnx_path)
    assert (meta.pop("input"), meta.pop("output")) == (oi.INPUT_NAME, oi.OUTPUT_NAME)
    assert meta == read_onnx_meta(onnx_path)


def test_cli_writes_onnx(tmp_path, model, meta, capsys):
    run = tmp_path / "run"
    save_model(run / "model.pt", model.state_dict(), meta)
    out = tmp_path / "exported" / "m.onnx"
    rc = main([str(run), "--out", str(out), "--opset", "17"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert str(out) in captured.out
    assert read_onnx_meta(out) == asdict(meta)
    assert [p.name for p in out.parent.iterdir()] == ["m.onnx"]  # no temporary left


@pytest.mark.parametrize("content", ["random", "tensor"])
def test_cli_model_not_ours(tmp_path, capsys, content):
    bad = tmp_path / "model.pt"
    if content == "random":
        bad.write_bytes(np.random.default_rng(0).bytes(1000))
    else:
        torch.save(torch.zeros(3), bad)
    rc = main([str(bad), "--out", str(tmp_path / "m.onnx")])
    assert rc == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert str(bad) in err and "not an s2l-tools model" in err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_bad_opset(tmp_path, capsys):
    rc = main([str(tmp_path), "--out", str(tmp_path / "m.onnx"), "--opset", "9"])
    assert rc == 1
    assert "--opset 9" in capsys.readouterr().err


def test_cli_out_must_be_onnx(tmp_path, capsys):
    rc = main([str(tmp_path), "--out", str(tmp_path / "m.txt")])
    assert rc == 1
    assert ".onnx" in capsys.readouterr().err


def test_export_leaves_model_alone(model, onnx_path):
    # the fixture exported `model`; it must still be a fresh seed-0 model in eval mode
    fresh = build_model(encoder="resnet18", in_channels=1, seed=0)
    assert model.training is False
    for (k, v), w in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(v, w), k
