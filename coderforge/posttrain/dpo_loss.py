"""The DPO objective: response log-probabilities of a model, and the sigmoid DPO loss with its metrics.

``response_logps(core, batch, chunk)`` runs a ``Qwen2ForCausalLM``'s decoder over a batch of DPO rows
(``dpo_task``: each row holds a pair's chosen sequence and its rejected sequence as two documents,
document-masked, positions restarting per document) and returns, per row, the summed log-probability
of the chosen and of the rejected response tokens (prompt tokens are never counted). Only the
response positions go through the LM head, in chunks of ``chunk`` tokens; each chunk's logits are
recomputed in backward (activation checkpointing), so no ``tokens × vocab`` tensor is kept.

``dpo_loss(policy, reference, beta)`` is the sigmoid DPO loss (Rafailov et al. 2023), as TRL's
``DPOTrainer`` computes it for ``loss_type="sigmoid"`` (``f_divergence_type="reverse_kl"``, no label
smoothing): ``-logsigmoid(β·((π_c − ref_c) − (π_r − ref_r)))`` averaged over pairs; the rewards are
``β·(π − ref)``. ``tests/posttrain/test_dpo.py`` checks the numbers against TRL 1.16's own trainer.
Its metrics are sums (the training loop adds them over a logging window and all ranks):
``pairs``, ``reward_correct`` (chosen reward > rejected reward), ``chosen_reward``,
``rejected_reward``, ``margin``, ``kl`` (Σ over both responses of ``ref − π``: per response, the
Monte-Carlo estimate of KL(π_ref ‖ π) for responses sampled from the reference model, as the
completions of ``dpo_pairs`` are; a few pairs, or chosen sides taken from the verified reference
solution, can make it negative), ``chosen_logp``, ``rejected_logp`` (and ``response_tokens``, added
by ``dpo_task.DPOTask``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE = -100
CHOSEN, REJECTED = 0, 1


def _token_logps(h: torch.Tensor, w: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = (h @ w.t()).float()
    return logits.gather(1, y[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)


def token_logps(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int) -> torch.Tensor:
    """log p(target) of each row of ``hidden`` ``[N, H]`` under the head ``weight``, ``chunk`` rows at a time."""
    parts = []
    for s in range(0, hidden.shape[0], max(1, chunk)):
        h, y = hidden[s:s + chunk], targets[s:s + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            parts.append(checkpoint(_token_logps, h, weight, y, use_reentrant=False))
        else:
            parts.append(_token_logps(h, weight, y))
    return torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)


def response_logps(core, batch: dict, chunk: int = 4096) -> torch.Tensor:
    """``[B, 2]``: Σ log p of the chosen (column 0) and rejected (column 1) response tokens of each row.

    ``batch``: ``input_ids``, ``position_ids``, ``attention_mask`` (the document mask), ``targets``
    (``[B, S]``: the next token where it is a response token, else ``IGNORE``) and ``slot``
    (``[B, S]``: 0 where the target belongs to the chosen response, 1 to the rejected one)."""
    out = core.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                     attention_mask=batch["attention_mask"], use_cache=False)
    targets = batch["targets"]
    rows, cols = (targets != IGNORE).nonzero(as_tuple=True)
    lp = token_logps(out.last_hidden_state[rows, cols], core.lm_head.weight, targets[rows, cols], chunk)
    slots = rows * 2 + batch["slot"][rows, cols]
    sums = torch.zeros(targets.shape[0] * 2, dtype=lp.dtype, device=lp.device).index_add(0, slots, lp)
    return sums.view(-1, 2)


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, beta: float) -> tuple[torch.Tensor, dict]:
    """The mean sigmoid DPO loss of pairs with ``[B, 2]`` policy and reference log-probabilities
    (chosen, rejected), and the batch's metric sums."""
    reference = reference.to(policy.dtype)
    logratios = policy - reference
    delta = logratios[:, CHOSEN] - logratios[:, REJECTED]
    loss = -F.logsigmoid(beta * delta).mean()
    with torch.no_grad():
        rewards = beta * logratios.detach()
        metrics = {
            "pairs": torch.tensor(float(policy.shape[0]), device=policy.device),
            "reward_correct": (rewards[:, CHOSEN] > rewards[:, REJECTED]).float().sum(),
            "chosen_reward": rewards[:, CHOSEN].sum(), "rejected_reward": rewards[:, REJECTED].sum(),
            "margin": (rewards[:, CHOSEN] - rewards[:, REJECTED]).sum(),
            "kl": (-logratios.detach()).sum(),
            "chosen_logp": policy.detach()[:, CHOSEN].sum(), "rejected_logp": policy.detach()[:, REJECTED].sum(),
        }
    return loss, metrics


def summarize(sums: dict[str, float], suffix: str = "") -> dict[str, float]:
    """Means from metric sums (the loop's ``<name>_window`` when ``suffix="_window"``): reward accuracy,
    mean chosen / rejected reward, mean margin, KL per response and mean log-probabilities."""
    n = float(sums.get("pairs" + suffix, 0.0))
    if n <= 0:
        return {}
    out = {"reward_accuracy": sums["reward_correct" + suffix] / n, "margin": sums["margin" + suffix] / n,
           "chosen_reward": sums["chosen_reward" + suffix] / n, "rejected_reward": sums["rejected_reward" + suffix] / n,
           "kl": sums["kl" + suffix] / (2 * n)}
    for key in ("chosen_logp", "rejected_logp"):
        if key + suffix in sums:
            out[key] = sums[key + suffix] / n
    if "response_tokens" + suffix in sums:
        out["response_tokens"] = sums["response_tokens" + suffix]
    return out
