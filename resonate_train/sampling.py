"""Samplers for the flow x_t = (1 - t) x_data + t noise, integrated from t = 1 (noise) to t = 0.

- ``euler_sample``: the deterministic ODE with classifier-free guidance (evaluation, DPO pairs).
- ``in_precision``: a network's forward passes in bfloat16 (autocast), everything around them in float32.
- ``sde_step``: Flow-GRPO's stochastic step with the same marginals, and the Gaussian log-density
  of the step actually taken, in float32 (the policy's log-prob for GRPO's ratio). As in Flow-GRPO,
  the log-density and the KL are averaged over the latent's elements (not summed): its clip range
  (1e-4) and KL weight are set for that scale.

The velocity model is ``v(x, t) -> noise - x_data``; guidance is ``v_u + w (v_c - v_u)``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(x (B, ...), t (B,)) -> velocity`` with the conditioning (and guidance) already bound."""


def timesteps(steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``steps + 1`` times from 1 to 0, evenly spaced."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1, device=device)


def in_precision(model: Callable[..., torch.Tensor], dtype: str = "float32") -> Callable[..., torch.Tensor]:
    """``model`` with its forward passes under autocast in ``dtype`` (on the device of its input;
    weights stay float32) and its output in float32, so guidance, the SDE step's density and the
    losses are computed in full precision. float32 returns ``model`` itself."""
    from ttaeval.devices import autocast, resolve_dtype

    if resolve_dtype(dtype) == torch.float32:
        return model

    def run(x: torch.Tensor, *args: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, dtype):
            out = model(x, *args)
        return out.float()

    return run


def guided(
    model: Callable[..., torch.Tensor],
    cond: tuple[torch.Tensor, ...],
    uncond: tuple[torch.Tensor, ...],
    scale: float,
) -> Velocity:
    """A velocity with classifier-free guidance: one batched call over [cond; uncond] rows.
    ``scale`` 1 is the conditional model alone (no unconditional pass is made)."""

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if scale == 1.0:
            return model(x, t, *cond)
        both = model(torch.cat([x, x]), torch.cat([t, t]), *(torch.cat([c, u]) for c, u in zip(cond, uncond)))
        v_c, v_u = both.chunk(2)
        return v_u + scale * (v_c - v_u)

    return v


@torch.no_grad()
def euler_sample(velocity: Velocity, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """Integrate the ODE dx/dt = v from t = 1 (``noise``) to 0 with Euler steps; returns x_0."""
    x = noise
    ts = timesteps(steps, noise.device)
    for t, t_next in itertools.pairwise(ts):
        x = x + velocity(x, t.expand(x.shape[0])) * (t_next - t)
    return x


@dataclass(frozen=True)
class SDEStep:
    """One Flow-GRPO step: the new sample, its log-density, and the Gaussian it was drawn from."""

    x_next: torch.Tensor
    log_prob: torch.Tensor  # (B,), float32, averaged over every non-batch dimension
    mean: torch.Tensor
    std: torch.Tensor  # scalar: sigma_t * sqrt(-dt)


def sde_sigma(t: float, a: float, t_first_next: float) -> float:
    """sigma_t = a sqrt(t / (1 - t)); at t = 1 (where it is infinite) Flow-GRPO puts the first
    step's end ``t_first_next`` in the denominator only: a sqrt(1 / (1 - t_first_next))."""
    denominator = 1.0 - (t_first_next if t >= 1.0 else t)
    return a * math.sqrt(t / denominator)


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    t: float,
    t_next: float,
    *,
    a: float = 0.7,
    t_first_next: float | None = None,
    noise: torch.Tensor | None = None,
    x_next: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> SDEStep:
    """Flow-GRPO's SDE step from ``t`` to ``t_next`` (< t), with noise level ``a``.

    mu = x (1 + sigma^2 dt / (2t)) + v (1 + sigma^2 (1 - t) / (2t)) dt, and x' = mu + sigma sqrt(-dt) z.
    Pass ``x_next`` to score a step already taken (the log-prob of a stored rollout under new
    weights); otherwise it is drawn (``noise`` or ``generator``). Everything is computed in float32.
    With ``a = 0`` the step is the ODE's Euler step and has no density (``log_prob`` is NaN).
    """
    dt = t_next - t
    if dt >= 0:
        raise ValueError(f"steps go from t = 1 to 0: t_next ({t_next}) must be below t ({t})")
    sigma = sde_sigma(t, a, t_first_next if t_first_next is not None else t_next)
    xf, vf = x.float(), v.float()
    mean = xf * (1 + sigma**2 * dt / (2 * t)) + vf * (1 + sigma**2 * (1 - t) / (2 * t)) * dt
    std = torch.tensor(sigma * math.sqrt(-dt), dtype=torch.float32, device=x.device)
    if x_next is None:
        z = noise if noise is not None else torch.randn(x.shape, generator=generator, device=x.device)
        x_next = mean + std * z.float()
    if sigma == 0:
        return SDEStep(x_next, torch.full(x.shape[:1], math.nan), mean, std)
    diff = x_next.float() - mean
    log_prob = -(diff**2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return SDEStep(x_next, log_prob.flatten(1).mean(1), mean, std)


def kl_to_reference(mean: torch.Tensor, ref_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """KL between two step Gaussians with the same std, ||mu - mu_ref||^2 / (2 std^2), per sample
    (averaged over the latent's elements, like the log-prob)."""
    return ((mean.float() - ref_mean.float()) ** 2).flatten(1).mean(1) / (2 * std**2)
