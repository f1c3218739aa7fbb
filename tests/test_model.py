from __future__ import annotations

import pytest
import torch
import torchvision

from s2l_tools.errors import S2LError
from s2l_tools.training.model import build_model, count_parameters, param_groups


def _tv_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = getattr(torchvision.models, name)(weights=None)
    return net.state_dict()


def test_build_forward_shape():
    model = build_model(encoder="resnet18", in_channels=1, seed=0).eval()
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 64, 96))
    assert out.shape == (2, 2, 64, 96)


def test_seed_is_reproducible_and_leaves_global_rng():
    before = torch.random.get_rng_state()
    a = build_model(encoder="resnet18", seed=3)
    b = build_model(encoder="resnet18", seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_unknown_encoder():
    with pytest.raises(S2LError, match="resnet18, resnet34, resnet50"):
        build_model(encoder="vgg16")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_load_torchvision_weights_grey(tmp_path, suffix):
    state = _tv_state("resnet18")
    path = tmp_path / f"r18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    model = build_model(encoder="resnet18", in_channels=1, weights=path)
    enc = model.encoder.state_dict()
    assert torch.equal(enc["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(enc["bn1.running_var"], state["bn1.running_var"])
    # 1 channel: RGB kernels summed (smp's rule)
    assert enc["conv1.weight"].shape == (64, 1, 7, 7)
    torch.testing.assert_close(enc["conv1.weight"], state["conv1.weight"].sum(1, keepdim=True))


def test_load_weights_rgb_and_two_channels(tmp_path):
    state = _tv_state("resnet18")
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    rgb = build_model(encoder="resnet18", in_channels=3, weights=path)
    assert torch.equal(rgb.encoder.conv1.weight, state["conv1.weight"])
    two = build_model(encoder="resnet18", in_channels=2, weights=path)
    w = state["conv1.weight"]
    torch.testing.assert_close(two.encoder.conv1.weight, w[:, [0, 1]] * 1.5)


def test_weights_of_other_depth_names_the_fit(tmp_path):
    path = tmp_path / "r18.pth"
    torch.save(_tv_state("resnet18"), path)
    with pytest.raises(S2LError, match=r"r18\.pth: not a resnet34.*looks like a resnet18"):
        build_model(encoder="resnet34", weights=path)


def test_weights_missing_file(tmp_path):
    with pytest.raises(S2LError, match="no such weights file"):
        build_model(encoder="resnet18", weights=tmp_path / "nope.pth")


def test_weights_unreadable(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a torch file")
    with pytest.raises(S2LError, match=r"junk\.pth: cannot read weights"):
        build_model(encoder="resnet18", weights=path)
    path2 = tmp_path / "junk.safetensors"
    path2.write_bytes(b"\x00" * 20)
    with pytest.raises(S2LError, match=r"junk\.safetensors: cannot read weights"):
        build_model(encoder="resnet18", weights=path2)


def test_weights_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(S2LError, match="not a state dict"):
        build_model(encoder="resnet18", weights=path)


def test_param_groups_decoder_mult():
    model = build_model(encoder="resnet18", seed=0)
    groups = param_groups(model, 3e-4, decoder_mult=10.0, weight_decay=5e-5)
    enc, dec = groups
    assert enc["name"] == "encoder" and dec["name"] == "decoder"
    assert enc["lr"] == pytest.approx(3e-4) and dec["lr"] == pytest.approx(3e-3)
    assert enc["weight_decay"] == dec["weight_decay"] == 5e-5
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    assert sum(p.numel() for p in enc["params"]) == n_enc
    assert n_enc + sum(p.numel() for p in dec["params"]) == count_parameters(model)
    opt = torch.optim.RAdam(groups)
    assert [g["lr"] for g in opt.param_groups] == [enc["lr"], dec["lr"]]


# --------------------------------------------------------- --encoder-weights imagenet / URL
def test_imagenet_weights_from_a_prefilled_cache(tmp_path, monkeypatch):
    """Offline, as on an air-gapped microscope PC: the cached torchvision file is used."""
    from s2l_tools.training.model import IMAGENET_URLS, resolve_encoder_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda *a, **k: pytest.fail("a cached file must not be fetched"))
    state = _tv_state("resnet18", seed=4)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_URLS["resnet18"].rsplit("/", 1)[1]
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    assert resolve_encoder_weights("imagenet", "resnet18") == cached
    model = build_model(encoder="resnet18", weights="imagenet")
    assert torch.equal(model.encoder.state_dict()["layer3.0.conv1.weight"],
                       state["layer3.0.conv1.weight"])


def test_weights_url_is_fetched_once_into_the_cache(tmp_path, monkeypatch):
    from s2l_tools.training.model import resolve_encoder_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    src = tmp_path / "served" / "my-resnet18.pth"
    src.parent.mkdir()
    state = _tv_state("resnet18", seed=5)
    torch.save(state, src)
    url = src.as_uri()  # file://..., fetched the way an https:// URL is
    model = build_model(encoder="resnet18", in_channels=3, weights=url)
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "my-resnet18.pth"
    assert cached.is_file()
    assert torch.equal(model.encoder.state_dict()["conv1.weight"], state["conv1.weight"])
    src.unlink()  # the source is gone: the cache still serves
    assert resolve_encoder_weights(url, "resnet18") == cached


def test_weights_neither_cached_nor_fetchable(tmp_path, monkeypatch):
    from s2l_tools.training import model as model_mod

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing = (tmp_path / "nowhere" / "resnet34-b627a593.pth").as_uri()
    monkeypatch.setitem(model_mod.IMAGENET_URLS, "resnet34", missing)
    with pytest.raises(S2LError) as err:
        build_model(encoder="resnet34", weights="imagenet")
    msg = str(err.value)
    assert "\n" not in msg and "cannot fetch" in msg and "resnet34-b627a593.pth does not exist" in msg
    assert not list((tmp_path / "torch").rglob("*.pth"))  # no half-written file left
