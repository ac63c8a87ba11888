"""The 470M FluxAudio computes the released network's function: its velocity and intermediate
activations equal the official code's golden outputs (``../shared/data/resonate/fluxaudio_forward``)
on deterministic synthetic weights, within the tolerances that folder's README gives."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch

from resonate_train.model import fluxaudio_470m


def fill_tensor(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The golden fixtures' fill rule (their README, section 2), key by key."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if key == "latent_mean":
        return 0.5 * r
    if key == "latent_std":
        return 1.0 + 0.5 * r.abs()
    if key.startswith("empty_string_feat"):
        return 0.2 * r
    if key.endswith(("q_norm.weight", "k_norm.weight")):
        return 2.0 + 0.2 * r
    if leaf == "bias":
        return 0.02 * r
    return r / math.sqrt(math.prod(shape[1:]))


def rel_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def golden(shared_data):
    return shared_data / "resonate" / "fluxaudio_forward"


@pytest.fixture(scope="module")
def filled(golden):
    torch.manual_seed(0)
    net = fluxaudio_470m().eval()
    state = {k: fill_tensor(k, tuple(v.shape)) for k, v in net.state_dict().items()}
    net.load_state_dict(state, strict=True)
    layout = json.loads((golden / "fluxaudio_m_44k.layout_and_fill_check.json").read_text())
    for key, check in layout["fill_check"].items():  # the fill is the fixtures' own
        value = state[key]
        assert list(value.shape) == check["shape"]
        assert np.allclose(value.flatten()[:4].numpy(), check["first4"], atol=1e-7)
        assert value.double().sum().item() == pytest.approx(check["sum"], rel=1e-6, abs=1e-6)
    return net


@pytest.mark.slow
@pytest.mark.parametrize("t", ["03", "09"])
def test_the_470m_velocity_and_intermediates_equal_the_official_golden(filled, golden, t):
    tol = json.loads((golden / "tolerances.json").read_text())["recommended_pass"]
    x, text_f, text_f_c = (
        torch.from_numpy(np.load(golden / f"in_{n}.npy")) for n in ("x", "text_f", "text_f_c")
    )
    captured: dict[str, np.ndarray] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            captured[name] = (output[0] if isinstance(output, tuple) else output).detach().numpy().copy()

        return hook

    hooks = [
        filled.text_cond_proj.register_forward_hook(keep("after_text_cond_proj")),
        filled.text_input_proj.register_forward_hook(keep("after_text_input_proj")),
        filled.t_embed.register_forward_hook(keep("after_t_embed")),
        filled.audio_input_proj.register_forward_hook(keep("after_audio_input_proj")),
    ]
    for i in (0, 15):
        block = filled.joint_blocks[i]

        def joint(_m, _inputs, output, i=i):
            captured[f"after_joint_block_{i}_latent"] = output[0].detach().numpy().copy()
            captured[f"after_joint_block_{i}_text"] = output[1].detach().numpy().copy()

        hooks.append(block.register_forward_hook(joint))
    for i in (0, 17, 35):
        hooks.append(filled.fused_blocks[i].register_forward_hook(keep(f"after_fused_block_{i}")))
    with torch.no_grad():
        velocity = filled(x, torch.tensor([int(t) / 10]), text_f, text_f_c).numpy()
    for h in hooks:
        h.remove()
    expected = np.load(golden / f"out_velocity_t{t}.npy")
    assert rel_l2(velocity, expected) <= tol["velocity_rel_l2"]
    assert np.abs(velocity - expected).max() <= tol["velocity_max_abs"]
    for name, ours in captured.items():
        theirs = np.load(golden / f"mid_t{t}_{name}.npy").reshape(ours.shape)
        assert rel_l2(ours, theirs) <= tol["intermediates_rel_l2"], name
    assert len(captured) == 11


# -- the 44.1 kHz mel VAE and its mel converter (``../shared/data/resonate/vae_vocoder``) ------------
def fill_vae_tensor(key: str, shape: tuple[int, ...], constants: dict) -> torch.Tensor:
    """The vae_vocoder fixtures' fill rule (their README, section 4), for the VAE's keys."""
    if key in ("data_mean", "data_std"):
        return torch.tensor(constants[f"vae44k_{key}"], dtype=torch.float32).view(1, 128, 1)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if key.rsplit(".", 1)[-1] == "learnable_gain":
        return 0.1 * r
    return r / math.sqrt(math.prod(shape[1:]))


@pytest.fixture(scope="module")
def vae_golden(shared_data):
    return shared_data / "resonate" / "vae_vocoder"


@pytest.fixture(scope="module")
def vae(vae_golden):
    from resonate_train.model.mel_vae import MelVAE

    layout = json.loads((vae_golden / "vae44k.state_dict.json").read_text())
    constants = json.loads((vae_golden / "constants.json").read_text())
    net = MelVAE().eval()
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == layout["state_dict"]  # key for key
    net.load_state_dict({k: fill_vae_tensor(k, tuple(s), constants) for k, s in layout["state_dict"].items()})
    with pytest.raises(RuntimeError, match="call fuse"):
        net.decode(torch.zeros(1, 40, 4))
    return net.fuse()


def _max_abs(ours: torch.Tensor, golden_file) -> float:
    return float(np.abs(ours.detach().numpy() - np.load(golden_file)).max())


def test_the_mel_converter_equals_the_official_44k_converter(vae_golden):
    from resonate_train.model.mel_vae import MelConverter

    converter = MelConverter()
    basis = np.load(vae_golden / "mel44k_mel_basis.npy")
    assert np.abs(converter.mel_basis.numpy() - basis).max() <= 1e-6 * np.abs(basis).max()
    mel = converter(torch.from_numpy(np.load(vae_golden / "b_wave_in.npy")))
    assert mel.shape == (1, 128, 172) and _max_abs(mel, vae_golden / "b_mel.npy") <= 1e-4


@pytest.mark.slow
def test_the_vae_decodes_and_encodes_as_the_official_44k_vae(vae, vae_golden):
    with torch.no_grad():
        mel = vae.decode(torch.from_numpy(np.load(vae_golden / "a_vae_decode_latent_in.npy")))
        mean, std = vae.encode(torch.from_numpy(np.load(vae_golden / "b_mel.npy")))
    assert mel.shape == (1, 128, 172) and _max_abs(mel, vae_golden / "a_vae_decode_mel_out.npy") <= 1e-4
    assert mean.shape == std.shape == (1, 40, 86)
    assert _max_abs(mean, vae_golden / "b_latent_mean.npy") <= 5e-5
    assert _max_abs(std, vae_golden / "b_latent_std.npy") <= 5e-5


@pytest.mark.slow
def test_resonate_decode_chain_unnormalises_before_the_vae(vae, vae_golden):
    """Fixture (d): a normalised (B, L, C) latent, un-normalised with the release's latent_mean/std,
    transposed and decoded: the official chain's mel."""
    constants = json.loads((vae_golden / "constants.json").read_text())
    mean = torch.tensor(constants["resonate_latent_mean_44k"]).view(1, 1, 40)
    std = torch.tensor(constants["resonate_latent_std_44k"]).view(1, 1, 40)
    x = torch.from_numpy(np.load(vae_golden / "d_chain_latent_in_normalised.npy"))
    with torch.no_grad():
        mel = vae.decode((x * std + mean).transpose(1, 2))
    assert _max_abs(mel, vae_golden / "d_chain_mel.npy") <= 1e-4
    with torch.no_grad():
        forgot = vae.decode(x.transpose(1, 2))  # the release's reward-decoding bug: no un-normalisation
    assert _max_abs(forgot, vae_golden / "d_chain_mel.npy") > 1e-2


# -- BigVGAN-v2 through NVIDIA's package ------------------------------------------------------------
def fill_bigvgan_tensor(key: str, shape: tuple[int, ...], constants: dict) -> torch.Tensor:
    """The vae_vocoder fixtures' fill rule for BigVGAN's (legacy weight-norm) keys."""
    if key.endswith(".filter"):
        return torch.tensor(constants["bigvgan_antialias_filter_12"], dtype=torch.float32).view(1, 1, 12)
    g = torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")))
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "bias":
        return 0.01 * r
    if leaf in ("alpha", "beta"):
        return 0.1 * r
    if leaf == "weight_g":
        s = 0.5 if ".convs" in key else (0.1 if key.startswith("conv_post.") else 1.0)
        return s * (1.0 + 0.1 * r)
    return r / math.sqrt(math.prod(shape[1:]))


@pytest.fixture(scope="module")
def vocoder(vae_golden, tmp_path_factory):
    from helpers import reference_package
    from resonate_train.model.vocoder import load_bigvgan

    reference_package("bigvgan")
    layout = json.loads((vae_golden / "bigvgan_v2_44khz_128band_512x.state_dict.json").read_text())
    constants = json.loads((vae_golden / "constants.json").read_text())
    state = {k: fill_bigvgan_tensor(k, tuple(s), constants) for k, s in layout["state_dict"].items()}
    path = tmp_path_factory.mktemp("bigvgan") / "bigvgan_generator.pt"
    torch.save({"generator": state}, path)  # the release's wrapping
    return load_bigvgan(path)


@pytest.mark.slow
def test_bigvgan_and_the_whole_decode_chain_equal_the_official_outputs(vocoder, vae, vae_golden):
    with torch.no_grad():
        wave = vocoder(torch.from_numpy(np.load(vae_golden / "a_vae_decode_mel_out.npy")))
        chain = vocoder(torch.from_numpy(np.load(vae_golden / "d_chain_mel.npy")))
    assert wave.shape == (1, 1, 88064) and _max_abs(wave, vae_golden / "c_bigvgan_wave_out.npy") <= 2e-5
    assert _max_abs(chain, vae_golden / "d_chain_wave_out.npy") <= 2e-5


def test_a_vocoder_file_that_does_not_fit_names_its_keys(tmp_path):
    from helpers import reference_package
    from resonate_train.model.vocoder import load_bigvgan

    reference_package("bigvgan")
    torch.save({"generator": {"conv_pre.weight_v": torch.zeros(3)}}, tmp_path / "g.pt")
    with pytest.raises(
        ValueError,
        match=r"does not fit BigVGAN .*missing \['conv_pre\.bias', 'conv_pre\.weight_g'.*"
        r"mis-shaped \['conv_pre\.weight_v'\]",
    ):
        load_bigvgan(tmp_path / "g.pt")
    with pytest.raises(FileNotFoundError, match=r"bigvgan_generator\.pt"):
        load_bigvgan(tmp_path)
