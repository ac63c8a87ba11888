"""resonate_train's FluxAudio network and samplers."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from resonate_train.model import (
    FluxAudio,
    fluxaudio_470m,
    fluxaudio_mini,
    load_network_weights,
    read_state_dict,
)
from resonate_train.sampling import euler_sample, guided, kl_to_reference, sde_sigma, sde_step


def test_470m_matches_the_released_layout_key_for_key(shared_data):
    ref = json.loads((shared_data / "resonate" / "fluxaudio_m_44k.state_dict.json").read_text())
    with torch.device("meta"):
        model = fluxaudio_470m()
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref["state_dict"]
    total = sum(t.numel() for t in model.state_dict().values())
    assert total == ref["parameters"] == 468_285_432
    assert abs(sum(p.numel() for p in model.parameters()) - 470e6) / 470e6 < 0.05


def _mini() -> FluxAudio:
    torch.manual_seed(0)
    model = fluxaudio_mini().initialize_weights()
    for p in model.parameters():  # leave adaLN-zero: random everywhere, so every path is exercised
        torch.nn.init.normal_(p, std=0.02)
    return model.eval()


def _inputs(model: FluxAudio, b: int = 2, t: int = 50):
    cfg = model.config
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(b, t, cfg.latent_dim, generator=g),
        torch.rand(b, generator=g),
        torch.randn(b, cfg.text_seq_len, cfg.text_dim, generator=g),
        torch.randn(b, cfg.text_c_dim, generator=g),
    )


def test_adaln_zero_initialisation_predicts_zero_velocity():
    model = fluxaudio_mini().initialize_weights()
    out = model(*_inputs(model))
    assert out.shape == (2, 50, model.config.latent_dim) and out.abs().max() == 0


def test_each_sample_is_computed_independently_of_its_batch_and_reacts_to_text():
    model = _mini()
    x, t, text, pooled = _inputs(model, b=3)
    with torch.no_grad():
        batched = model(x, t, text, pooled)
        single = model(x[1:2], t[1:2], text[1:2], pooled[1:2])
        other_text = model(x[1:2], t[1:2], text[2:3], pooled[2:3])
    assert torch.allclose(batched[1:2], single, atol=1e-5)
    assert not torch.allclose(single, other_text, atol=1e-3)


def test_latent_normalisation_round_trips_and_travels_with_the_weights(tmp_path):
    model = _mini()
    model.latent_mean.copy_(torch.linspace(-1, 1, model.config.latent_dim).view(1, 1, -1))
    model.latent_std.copy_(torch.linspace(0.5, 2, model.config.latent_dim).view(1, 1, -1))
    x = torch.randn(2, 10, model.config.latent_dim)
    assert torch.allclose(model.unnormalize(model.normalize(x)), x, atol=1e-6)
    assert not torch.allclose(model.normalize(x), x)
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "w.safetensors")
    fresh = load_network_weights(fluxaudio_mini(), tmp_path / "w.safetensors")
    assert torch.equal(fresh.latent_std, model.latent_std)


def test_checkpoint_wrappings_are_undone_and_pickled_code_is_refused(tmp_path):
    model = _mini()
    wrapped = {"ema": {f"module.{k}": v for k, v in model.state_dict().items()}, "step": 3}
    torch.save(wrapped, tmp_path / "ckpt.pth")
    loaded = load_network_weights(fluxaudio_mini(), tmp_path / "ckpt.pth")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))

    torch.save({"model": {"x": torch.zeros(1)}, "obj": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"refused.*weights_only"):
        read_state_dict(tmp_path / "evil.pth")
    sd = model.state_dict()
    sd.pop("latent_mean")
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"missing \(1\): latent_mean.*unexpected \(1\): extra.weight"):
        load_network_weights(fluxaudio_mini(), tmp_path / "partial.pth")


class _Payload:
    """A class a checkpoint would need to unpickle: code, not tensors."""


def test_euler_integrates_an_exact_linear_flow_to_the_data_point():
    x0 = torch.tensor([[0.3, -1.2, 2.0]])

    def v(x, t):  # the exact velocity of x_t = (1 - t) x0 + t n
        return (x - x0) / t.view(-1, 1)

    out = euler_sample(v, torch.randn(4, 3), steps=7)
    assert torch.allclose(out, x0.expand(4, 3), atol=1e-5)


def test_guidance_is_uncond_plus_scale_times_the_difference():
    def model(x, t, c):
        return x * c

    x, t = torch.ones(2, 3), torch.full((2,), 0.5)
    c, u = torch.full((2, 3), 2.0), torch.full((2, 3), 0.5)
    assert torch.allclose(guided(model, (c,), (u,), 4.5)(x, t), 0.5 + 4.5 * (2.0 - 0.5) * x)
    assert torch.allclose(guided(model, (c,), (u,), 1.0)(x, t), 2.0 * x)


def test_sde_step_log_prob_is_the_gaussian_density_of_the_step():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 5, generator=g)
    step = sde_step(x, v, 0.6, 0.5, a=0.7, generator=g)
    sigma = 0.7 * math.sqrt(0.6 / 0.4)
    assert step.std.item() == pytest.approx(sigma * math.sqrt(0.1))
    expected = torch.distributions.Normal(step.mean, step.std).log_prob(step.x_next).flatten(1).mean(1)
    assert torch.allclose(step.log_prob, expected, atol=1e-5) and step.log_prob.dtype == torch.float32
    again = sde_step(x, v, 0.6, 0.5, a=0.7, x_next=step.x_next)  # re-scoring a stored step
    assert torch.equal(again.log_prob, step.log_prob)
    assert torch.equal(kl_to_reference(step.mean, step.mean, step.std), torch.zeros(4))
    assert sde_sigma(1.0, 0.7, 0.9) == pytest.approx(0.7 * math.sqrt(1 / 0.1))  # Flow-GRPO's t = 1


def test_sde_sampling_keeps_the_flow_marginals():
    """Gaussian data N(0, s^2): the exact velocity is known; SDE sampling from t = 1 must end with
    variance s^2 (the ODE would too; a wrong drift term would not)."""
    s2 = 0.25

    def v(x, t):
        var = (1 - t) ** 2 * s2 + t**2
        return (t - (1 - t) * s2) / var * x

    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 1, generator=g)
    ts = [*torch.linspace(1.0, 0.0, 201)[:-1].tolist(), 0.0001]
    for t, t_next in itertools.pairwise(ts):
        x = sde_step(x, v(x, torch.tensor(t)), t, t_next, a=0.7, t_first_next=ts[1], generator=g).x_next
    assert x.var().item() == pytest.approx(s2, rel=0.06)


def test_mel_codec_is_deterministic_and_keeps_the_frame_grid():
    from resonate_train.model.codec import MelCodec
    from ttaeval.synth.scenes import Scene, render
    from ttaeval.synth.suites import accuracy_suite

    codec = MelCodec(griffin_lim_iters=8)
    audio = torch.tensor(render(Scene.from_dict(accuracy_suite()[1].attributes["scene"])))
    latent = codec.encode(audio)
    assert latent.shape == (1, codec.frames(4.0), codec.latent_dim)
    decoded = codec.decode(latent, audio.shape[1])
    assert decoded.shape == audio.shape and torch.equal(decoded, codec.decode(latent, audio.shape[1]))
    # the decoded clip's log-mel is closer to the original's than the original is to its own mean
    err = (codec.encode(decoded) - latent).abs().mean()
    assert err < (latent - latent.mean()).abs().mean()


def test_sde_with_zero_noise_is_the_euler_step():
    x, v = torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    step = sde_step(x, v, 0.6, 0.5, a=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(step.x_next, x + v * (0.5 - 0.6), atol=1e-6) and torch.isnan(step.log_prob).all()


def test_advantages_of_a_constant_group_are_zero_and_failed_rewards_are_masked():
    from resonate_train.objectives import group_advantages

    rewards = torch.tensor([0.5, 0.5, 0.5, 0.1, 0.9, float("nan")])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    adv = group_advantages(rewards, groups)
    assert torch.equal(adv[:3], torch.zeros(3))
    assert adv[3] < 0 < adv[4] and torch.isnan(adv[5])
    finite = rewards[:5]
    assert adv[4] == pytest.approx(0.4 / (finite.std(unbiased=False).item() + 1e-4), rel=1e-5)
    assert (
        group_advantages(torch.tensor([0.0, 100.0]), torch.tensor([0, 1]), global_std=False).abs().max() == 0
    )
    outlier = torch.zeros(101)
    outlier[0] = 1.0  # standardised, about 10: clipped
    assert group_advantages(outlier, torch.zeros(101, dtype=torch.long)).max() == 5.0


def test_first_inner_step_has_ratio_one_and_zero_kl():
    from resonate_train.objectives import grpo_loss

    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(4, 6, 3, generator=g), torch.randn(4, 6, 3, generator=g)
    rollout = sde_step(x, v, 0.8, 0.7, generator=g)  # the sampling policy's step
    now = sde_step(x, v.clone().requires_grad_(), 0.8, 0.7, x_next=rollout.x_next)  # same weights
    kl = kl_to_reference(now.mean, rollout.mean, now.std)
    adv = torch.tensor([1.0, -1.0, 0.5, float("nan")])
    out = grpo_loss(now.log_prob, rollout.log_prob.detach(), adv, kl=kl)
    assert torch.equal(torch.exp(now.log_prob - rollout.log_prob), torch.ones(4))
    assert out.kl.item() == 0 and out.approx_kl.item() == 0 and out.clip_fraction.item() == 0
    assert out.loss.item() == pytest.approx(-adv[:3].mean().item())
    out.loss.backward()  # the gradient reaches the policy through the log-prob


def test_dpo_loss_is_log_two_when_the_policy_is_the_reference():
    from resonate_train.objectives import flow_dpo_loss

    e = torch.rand(8)
    assert flow_dpo_loss(e, e.flip(0), e, e.flip(0)).item() == pytest.approx(math.log(2))
    better = flow_dpo_loss(e * 0.5, e.flip(0), e, e.flip(0))  # the winner's error went down
    assert better.item() < math.log(2)
