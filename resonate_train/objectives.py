"""The training objectives as pure functions (the trainers only feed them).

- GRPO (Flow-GRPO): group-relative advantages, the PPO-clipped policy loss on per-step log-prob
  ratios, and the KL to the reference policy.
- Flow-matching DPO (Diffusion-DPO / TangoFlux on velocities).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def group_advantages(
    rewards: torch.Tensor,
    groups: torch.Tensor,
    *,
    clip: float = 5.0,
    global_std: bool = True,
    eps: float = 1e-4,
) -> torch.Tensor:
    """(r - mean of its prompt's group) / (std + eps), clipped to +-``clip``.

    ``global_std``: divide by the std of all rewards of the step (the paper's choice: per-prompt
    means, global std) instead of each group's own. A NaN reward (a failed scorer call) gets a NaN
    advantage and is left out of every statistic: it is masked out of the loss, never counted as 0.
    """
    rewards = rewards.float()
    ok = torch.isfinite(rewards)
    adv = torch.full_like(rewards, float("nan"))
    if not ok.any():
        return adv
    means = torch.zeros_like(rewards)
    stds = torch.zeros_like(rewards)
    for g in torch.unique(groups[ok]):
        member = (groups == g) & ok
        means[member] = rewards[member].mean()
        stds[member] = rewards[member].std(unbiased=False)
    std = rewards[ok].std(unbiased=False) if global_std else stds[ok]
    adv[ok] = ((rewards[ok] - means[ok]) / (std + eps)).clamp(-clip, clip)
    return adv


@dataclass(frozen=True)
class GRPOLoss:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    kl: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_range: float = 1e-4,
    kl: torch.Tensor | None = None,
    beta: float = 0.04,
) -> GRPOLoss:
    """PPO-clipped loss of one denoising step for a batch of samples (NaN advantages masked out).

    ratio = exp(log_prob - old_log_prob); loss = mean(max(-A ratio, -A clip(ratio, 1 +- c))) + beta KL.
    ``approx_kl`` = mean((log_prob - old_log_prob)^2) / 2 and ``clip_fraction`` are what Flow-GRPO logs.
    """
    keep = torch.isfinite(advantages)
    if not keep.any():
        zero = log_prob.sum() * 0
        return GRPOLoss(zero, zero, zero, zero.detach(), zero.detach())
    lp, old, adv = log_prob[keep], old_log_prob[keep], advantages[keep]
    ratio = torch.exp(lp - old)
    policy = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - clip_range, 1 + clip_range)).mean()
    kl_mean = kl[keep].mean() if kl is not None else policy * 0
    return GRPOLoss(
        policy + beta * kl_mean,
        policy,
        kl_mean,
        (0.5 * (lp - old) ** 2).mean().detach(),
        ((ratio - 1).abs() > clip_range).float().mean().detach(),
    )


def flow_dpo_loss(
    err_w: torch.Tensor,
    err_l: torch.Tensor,
    ref_err_w: torch.Tensor,
    ref_err_l: torch.Tensor,
    beta: float = 100.0,
) -> torch.Tensor:
    """-log sigmoid(-beta/2 ((L_w - Lref_w) - (L_l - Lref_l))), mean over pairs; L is each sample's
    velocity MSE, winner and loser sharing the noise and t. Equals log 2 when policy = reference."""
    inside = (err_w - ref_err_w) - (err_l - ref_err_l)
    return -F.logsigmoid(-beta / 2 * inside).mean()
