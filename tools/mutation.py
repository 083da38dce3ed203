"""Mutation testing of the core files: one deliberate bug at a time, the relevant tests run with ``-x``.

Each mutant is ``(file, exact original snippet, replacement, test paths)``; the snippet must occur exactly once in the
file (a stale snippet is reported, not skipped silently). The script copies the repository (``lightning_info``,
``tests``, ``pyproject.toml``, ...) to temporary folders, one per job, applies one mutant at a time to the copy, runs
``pytest -x`` there with ``PYTHONPATH`` pointing at the copy and a per-mutant timeout, and restores the file. The
working tree is never written. A mutant is *killed* when the tests fail or time out.

Not part of the default test run (a full run takes long on a CPU)::

    nice -n 10 python tools/mutation.py                 # every mutant, one job
    python tools/mutation.py --only kernels --jobs 2    # the mutants whose id or file contains "kernels"
    python tools/mutation.py --only sam:3f2a9c1b,gam    # several patterns, any of them
    python tools/mutation.py --list                     # ids (file stem + hash of snippet and replacement)

Exit status: 0 if the score reaches ``--goal`` (default 0.95), 1 otherwise, 2 if a snippet is stale.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("lightning_info", "tests", "benchmarks", "examples", "pyproject.toml")


@dataclass(frozen=True)
class Mutant:
    """One deliberate bug: ``original`` replaced by ``replacement`` in ``file``, caught by ``tests``."""

    file: str  # relative to the repository root
    original: str  # exact snippet, unique in the file
    replacement: str
    tests: tuple[str, ...]  # test paths run with -x

    @property
    def id(self) -> str:
        """``<file stem>:<8 hex digits>``, a hash of the snippet and its replacement: stable when lines move."""
        digest = hashlib.sha1(f"{self.original}\0{self.replacement}".encode()).hexdigest()[:8]
        return f"{Path(self.file).stem}:{digest}"

    @property
    def label(self) -> str:
        """The id followed by the start of the original snippet, for the printed outcome lines."""
        return f"{self.id} {self.original.strip()[:48]!r}"

    def exists(self) -> bool:
        return (ROOT / self.file).read_text().count(self.original) == 1


# ---------------------------------------------------------------------------------------------------- test sets
SAM_T = ("tests/optim/test_sam.py", "tests/optim/test_mutants.py")
GAM_T = ("tests/optim/test_gam.py", "tests/optim/test_mutants.py")
OPT_T = (
    "tests/optim/test_glue.py",
    "tests/optim/test_sam.py",
    "tests/optim/test_gam.py",
    "tests/optim/test_mutants.py",
)
PASSES_T = ("tests/optim/test_passes.py", "tests/optim/test_isolation.py", "tests/optim/test_lightning.py")
DDP_OPT_T = ("tests/optim/test_ddp.py",)  # 2-process runs: their slow tests are run too (see SLOW_OK)
DDP_MCMI_T = ("tests/distill/test_ddp.py",)
DDP_FISHER_T = ("tests/fisher/test_fisher_mask.py::test_ddp_masks_from_rank_dependent_scores_are_rank_0_s",)
SLOW_OK = {DDP_OPT_T, DDP_MCMI_T, DDP_FISHER_T}
KERNEL_T = (
    "tests/losses/test_kernel_distances.py",
    "tests/losses/test_cauchy_schwarz.py",
    "tests/losses/test_cs_ib.py",
)
CMI_T = ("tests/metrics/test_conditional_mutual_information.py", "tests/distill/test_losses.py")
MCMI_T = ("tests/distill/test_losses.py",)
MASKS_T = ("tests/fisher/test_sparse.py", "tests/fisher/test_fisher.py")
FISHER_T = ("tests/fisher/test_fisher.py",)
SPECTRAL_T = (
    "tests/metrics/test_vendi_unit_rows.py",
    "tests/metrics/test_matrix_entropy.py",
    "tests/metrics/test_vendi_score.py",
    "tests/metrics/test_matrix_nuclear_norm.py",
    "tests/metrics/test_gram_spectrum.py",
)
DSE_T = ("tests/metrics/test_diffusion_spectral.py", "tests/metrics/test_dsmi_mutants.py")
LOSS_TERM_T = ("tests/callbacks/test_loss_term.py",)
CAPTURE_T = ("tests/utils/test_capture.py", "tests/callbacks/test_capture.py")

SA = "lightning_info/optim/sharpness_aware.py"
SAM_F = "lightning_info/optim/sam.py"
GAM_F = "lightning_info/optim/gam.py"
LISTS_F = "lightning_info/optim/_tensor_lists.py"
PASSES = "lightning_info/optim/_passes.py"
KERNELS = "lightning_info/functional/kernels.py"
CMI = "lightning_info/functional/cmi.py"
MCMI = "lightning_info/distill/mcmi_loss.py"
MASKS = "lightning_info/fisher/masks.py"
FISHER = "lightning_info/fisher/fisher.py"
FISHER_MASK = "lightning_info/callbacks/fisher_mask.py"
SPECTRAL = "lightning_info/functional/spectral.py"
DSE = "lightning_info/functional/diffusion_spectral.py"
LOSS_TERM = "lightning_info/callbacks/loss_term.py"
CAPTURE = "lightning_info/_internal/capture.py"

_RAW: list[tuple[str, str, str, tuple[str, ...]]] = [
    # ---- sharpness_aware.py (base class)
    (SA, "if len({(n.dtype, n.device) for n in norms}) > 1:", "if False:", OPT_T),
    (
        SA,
        "norm = torch.linalg.vector_norm(torch.stack(norms), ord)",
        "norm = torch.linalg.vector_norm(torch.stack(norms), 2.0)",
        OPT_T,
    ),
    (
        SA,
        'if not math.isfinite(value):\n        raise NonFiniteGradientError(\n            f"{optimizer}',
        'if math.isnan(value):\n        raise NonFiniteGradientError(\n            f"{optimizer}',
        OPT_T,
    ),
    (SA, 'self._run["zero_grad_calls"] += 1', "pass", OPT_T),
    (
        SA,
        'state["sharpness_aware"] = {"step": int(self._run["step"])}',
        'state["sharpness_aware"] = {"step": 0}',
        OPT_T,
    ),
    (SA, "        groups[:] = base.param_groups\n", "", OPT_T),
    (SA, 'return int(self._run["step"]) % self.interval == 0', "return True", OPT_T),
    (SA, 'params = [p for p in group["params"] if p.grad is not None]', 'params = [p for p in group["params"]]', OPT_T),
    (
        SA,
        'value = float(finiteness_norm([grads for _, _, grads in groups], group=self._run.get("shard_group")))',
        "value = 0.0",
        OPT_T,
    ),
    (SA, "    if math.isfinite(float(norm)):\n        return norm\n", "    return norm\n", OPT_T),
    (
        SA,
        'and self._run["zero_grad_calls"] == zero_grad_calls and probe[0].grad is probe[1]',
        "and probe[0].grad is probe[1]",
        OPT_T,
    ),
    (SA, "loss = passes.clean(local=not self.sync_perturbation)", "loss = passes.clean(local=False)", DDP_OPT_T),
    (
        SA,
        "        if not due:\n            with torch.enable_grad():",
        "        if due:\n            with torch.enable_grad():",
        OPT_T,
    ),
    (SA, "                    self._scale_grads(scale)\n", "                    pass\n", OPT_T),
    (SA, "        scaler.update()\n", "", OPT_T),
    (
        SA,
        "    if isinstance(value, Tensor) and value.numel() == 1:\n        return value.detach().float().reshape(())",
        "    if isinstance(value, Tensor) and value.numel() == 1:\n        return value.detach().float().reshape(()).neg()",  # noqa: E501
        OPT_T,
    ),
    # ---- sam.py
    (SAM_F, "t = list(torch._foreach_abs(params))", "t = [torch.ones_like(p) for p in params]", SAM_T),
    (SAM_F, 'torch._foreach_add_(t, group["eta"])', "pass", SAM_T),
    (SAM_F, "directions.append(list(torch._foreach_mul(tg, t)))", "directions.append(tg)", SAM_T),
    (
        SAM_F,
        'scales = [group["rho"] / value if value > 0 else 0.0',
        'scales = [group["rho"] / (value + 1e-3) if value > 0 else 0.0',
        SAM_T,
    ),
    (
        SAM_F,
        "torch._foreach_add_(params, direction, alpha=scale)",
        "torch._foreach_sub_(params, direction, alpha=scale)",
        SAM_T,
    ),
    (SAM_F, 'plain = not any(group["adaptive"] for group, _, _ in groups)', "plain = True", SAM_T),
    (SAM_F, "if plain and len(groups) == 1:", "if plain:", SAM_T),
    (
        SAM_F,
        'norm.new_tensor(groups[0][0]["rho"] if value > 0 else 0.0)',
        'norm.new_tensor(groups[0][0]["rho"])',
        SAM_T,
    ),
    (SAM_F, "        self._restore()\n        self._check_direction()\n", "        self._check_direction()\n", SAM_T),
    (SAM_F, "            copy_tensors(*saved)", "            pass", SAM_T),
    (SAM_F, 'self.statistics["sharpness"] = worst - clean', 'self.statistics["sharpness"] = clean - worst', SAM_T),
    (
        SAM_F,
        'check_range("rho", group["rho"], 0, low_inclusive=False)',
        'check_range("rho", group["rho"], -1.0)',
        SAM_T,
    ),
    (SAM_F, "        if zero_grad:\n            self.zero_grad()\n\n    def _perturb", "\n    def _perturb", SAM_T),
    # ---- gam.py
    (LISTS_F, "        flat /= dist.get_world_size(group)\n", "", DDP_OPT_T),
    (
        "lightning_info/optim/_tensor_lists.py",
        "            p.grad = torch.zeros_like(p)",
        "            p.grad = torch.ones_like(p)",
        GAM_T,
    ),
    (
        GAM_F,
        'torch._foreach_mul_(h_g, group["alpha"] * group["rho"] * d.h_norm_scale)',
        'torch._foreach_mul_(h_g, group["alpha"] * d.h_norm_scale)',
        GAM_T,
    ),
    (GAM_F, "torch._foreach_add_(d.h_norm, d.h_loss)", "torch._foreach_sub_(d.h_norm, d.h_loss)", GAM_T),
    (GAM_F, "        if local and passes.ddp_seen:\n", "        if False:\n", DDP_OPT_T),
    (GAM_F, "first_order_flatness=d.radius * d.adv_grad_norm", "first_order_flatness=d.radius * d.grad_norm", GAM_T),
    (
        GAM_F,
        "torch._foreach_add_(params, direction, alpha=radius / (norm + self.xi))",
        "torch._foreach_add_(params, direction, alpha=radius / norm)",
        GAM_T,
    ),
    (
        GAM_F,
        'factors = [group["rho"] * scale / (value + self.xi) for group in hyper]',
        'factors = [group["rho"] / (value + self.xi) for group in hyper]',
        GAM_T,
    ),
    (
        GAM_F,
        "        if len(hyper) == 1:\n            return norm * factors[0]",
        "        if True:\n            return norm * factors[0]",
        GAM_T,
    ),
    (GAM_F, "r1 = self.sam_rho if self.sam_rho is not None else self.fd_step", "r1 = self.fd_step", GAM_T),
    (GAM_F, "f = list(torch._foreach_sub(g1, g0))  # r1 * H(theta) u", "f = list(g1)", GAM_T),
    (
        GAM_F,
        "radius = self._ascend(params, f, hyper, sizes, 1.0 / r1)",
        "radius = self._ascend(params, f, hyper, sizes, 1.0)",
        GAM_T,
    ),
    (
        GAM_F,
        "self._unit_step(params, g2, self.fd_step, n2_value)",
        "self._unit_step(params, g0, self.fd_step, n2_value)",
        GAM_T,
    ),
    (GAM_F, "h_loss = g1 if self.sam_rho is not None else g0", "h_loss = g0", GAM_T),
    (
        GAM_F,
        "return _Directions(h_loss, h_norm, 1.0 / self.fd_step, radius, n0, n2, perturbed)",
        "return _Directions(h_loss, h_norm, 1.0, radius, n0, n2, perturbed)",
        GAM_T,
    ),
    (
        GAM_F,
        "f = _hessian_vector(params, list(torch._foreach_div(g0, n0_value + self.xi)))",
        "f = _hessian_vector(params, g0)",
        GAM_T,
    ),
    (
        GAM_F,
        "h_norm = _hessian_vector(params, list(torch._foreach_div(g2, n2_value + self.xi)))",
        "h_norm = _hessian_vector(params, g2)",
        GAM_T,
    ),
    # ---- _passes.py
    (PASSES, "    torch.set_rng_state(cpu)\n", "", PASSES_T),
    (
        PASSES,
        "        if not in_auxiliary_pass():\n            return original(self, *args, **kwargs)\n        saved",
        "        if True:\n            return original(self, *args, **kwargs)\n        saved",
        PASSES_T,
    ),
    (PASSES, "            self._buffers.update(zip(_BN_BUFFERS, saved, strict=True))", "            pass", PASSES_T),
    (
        PASSES,
        "        if in_auxiliary_pass():\n            return None",
        "        if False:\n            return None",
        PASSES_T,
    ),
    (PASSES, "        if passes is None or not passes.defer_clipping:", "        if True:", PASSES_T),
    (PASSES, "        if passes is not None and passes.local:\n", "        if False:\n", DDP_OPT_T),
    (PASSES, "                module.require_backward_grad_sync = flag", "                pass", DDP_OPT_T),
    (
        PASSES,
        "        if self._reuse_rng:\n            self._rng = _rng_state()",
        "        if False:\n            self._rng = _rng_state()",
        PASSES_T,
    ),
    (
        PASSES,
        "            original, args, kwargs = self._clip_calls[-1]",
        "            original, args, kwargs = self._clip_calls[0]",
        PASSES_T,
    ),
    (PASSES, "        if self._after_pass is not None:\n            self._after_pass()", "        pass", PASSES_T),
    # ---- functional/kernels.py
    (
        KERNELS,
        "        tensor = tensor.float()\n    return tensor.reshape",
        "        pass\n    return tensor.reshape",
        KERNEL_T,
    ),
    (KERNELS, "        dtype = torch.promote_types(dtype, tensor.dtype)", "        pass", KERNEL_T),
    (
        KERNELS,
        "        return (a - other.reshape(1, -1)).square()",
        "        return (a - other.reshape(1, -1)).abs()",
        KERNEL_T,
    ),
    (KERNELS, "center = a.detach().mean(dim=0, keepdim=True)", "center = a.detach()[:1] * 0", KERNEL_T),
    (KERNELS, "b_c = a_c if same else other - center", "b_c = a_c if same else other", KERNEL_T),
    (KERNELS, "a_c, b_c.T, beta=1.0, alpha=-2.0).clamp_min(0.0)", "a_c, b_c.T, beta=1.0, alpha=-2.0)", KERNEL_T),
    (KERNELS, "        dist.fill_diagonal_(0.0)\n", "        pass\n", KERNEL_T),
    (
        KERNELS,
        "spread = points.var(dim=0, unbiased=True).mean().sqrt()",
        "spread = points.var(dim=0, unbiased=True).mean()",
        KERNEL_T,
    ),
    (KERNELS, "(4.0 / ((d + 2) * n)) ** (1.0 / (d + 4))", "(4.0 / ((d + 2) * n)) ** (1.0 / (d + 2))", KERNEL_T),
    (KERNELS, "offset=1, device=sq_dists.device)", "offset=0, device=sq_dists.device)", KERNEL_T),
    (KERNELS, "width = values.median().sqrt()", "width = values.median()", KERNEL_T),
    (KERNELS, "            width = values.sqrt().mean()\n", "            pass\n", KERNEL_T),
    (
        KERNELS,
        'if sigma == "median":\n        return _median_from_sq_dists(sq_dists)',
        'if sigma == "median":\n        return _silverman(samples)',
        KERNEL_T,
    ),
    (KERNELS, "return sq_dists * (-0.5 / sigma**2)", "return sq_dists * (-1.0 / sigma**2)", KERNEL_T),
    (KERNELS, "return log_k.clamp_min(_KERNEL_FLOOR).exp()", "return log_k.exp()", KERNEL_T),
    (
        KERNELS,
        "return (values - top).clamp_min(_LSE_FLOOR).exp().sum(dim=dim).log() + top.squeeze(dim)",
        "return (values - top).clamp_min(_LSE_FLOOR).exp().sum(dim=dim).log()",
        KERNEL_T,
    ),
    (
        KERNELS,
        "marginals = _log_self_sum(k) + _log_self_sum(l_z)",
        "marginals = _log_self_sum(k) - _log_self_sum(l_z)",
        KERNEL_T,
    ),
    (KERNELS, "return joint + marginals - 2 * cross", "return joint + marginals - cross", KERNEL_T),
    (
        KERNELS,
        'log_norm = 2 * _log_self_sum(k, 1) if estimator == "proposition" else _log_self_sum(k.square(), 1)',
        "log_norm = _log_self_sum(k.square(), 1)",
        KERNEL_T,
    ),
    (
        KERNELS,
        "l2 = _kernel(_log_kernel(squared_distances(y_pred), width))",
        "l2 = _kernel(_log_kernel(squared_distances(y), width))",
        KERNEL_T,
    ),
    (KERNELS, "return t1 + t2 - 2 * t3", "return t1 + t2 - t3", KERNEL_T),
    (
        KERNELS,
        "return prediction, _qmi_from_kernels(k, _kernel(log_gram(t, sigma_t)))",
        "return prediction, _qmi_from_kernels(k, _kernel(log_gram(t, sigma_x)))",
        KERNEL_T,
    ),
    (
        KERNELS,
        "log_aa, log_bb, log_ab = log_pooled[:m, :m], log_pooled[m:, m:], log_pooled[:m, m:]",
        "log_aa, log_bb, log_ab = log_pooled[:m, :m], log_pooled[m:, m:], log_pooled[:m, :m]",
        KERNEL_T,
    ),
    (KERNELS, "- 2 * _logsumexp(log_ab, dim=(0, 1))", "- _logsumexp(log_ab, dim=(0, 1))", KERNEL_T),
    (KERNELS, "    if factor > torch.finfo(dtype).max:", "    if False:", KERNEL_T),
    (
        KERNELS,
        "    if not bool(torch.isfinite(value.detach())):",
        "    if bool(torch.isnan(value.detach())):",
        KERNEL_T,
    ),
    (KERNELS, "    if len(set(sizes.values())) > 1:", "    if False:", KERNEL_T),
    # ---- functional/cmi.py
    (CMI, "DEFAULT_EPS = 1e-8", "DEFAULT_EPS = 1e-6", CMI_T),
    (CMI, "return sums / counts.clamp_min(1.0)[:, None]", "return sums / (counts + 1.0)[:, None]", CMI_T),
    (CMI, "log_q = centroids.clamp_min(eps).log()[target]", "log_q = centroids.clamp_min(eps).log()[0]", CMI_T),
    (CMI, "return (probs * (log_probs - log_q)).sum(dim=1)", "return (log_probs - log_q).sum(dim=1)", CMI_T),
    (
        CMI,
        "sums = probs.new_zeros(num_classes, probs.shape[1]).index_add_(0, target, probs)",
        "sums = probs.new_zeros(num_classes, probs.shape[1]).index_add_(0, target, probs.square())",
        CMI_T,
    ),
    (CMI, "        if bool((centroids < 0).any()):", "        if False:", CMI_T),
    (
        CMI,
        "return kl_to_centroids(p, p.clamp_min(eps).log(), target, q, eps).mean()",
        "return kl_to_centroids(p, p.clamp_min(eps).log(), target, q, eps).sum()",
        CMI_T,
    ),
    (CMI, 'check_range("eps", eps, 0.0, 1.0, low_inclusive=False, high_inclusive=False)', "float(eps)", CMI_T),
    # ---- distill/mcmi_loss.py
    (
        MCMI,
        "grad = torch.add(p_ce, d, alpha=-ctx.lam / ctx.temperature)",
        "grad = torch.add(p_ce, d, alpha=-ctx.lam)",
        MCMI_T,
    ),
    (MCMI, "            grad.mul_(d_loss / n)", "            grad.mul_(d_loss)", MCMI_T),
    (MCMI, "term = d * (d_cmi / (n * ctx.temperature))", "term = d * (d_cmi / n)", MCMI_T),
    (MCMI, "d = p * (excess - (p * excess).sum(dim=1, keepdim=True))", "d = p * excess", MCMI_T),
    (MCMI, "return (p if temperature == 1.0 else torch.softmax(z, dim=1)), d", "return p, d", MCMI_T),
    (MCMI, "log_p_ce = log_p if self.temperature == 1.0 else torch.log_softmax(zd, dim=1)", "log_p_ce = log_p", MCMI_T),
    (MCMI, "loss = torch.sub(ce, cmi, alpha=self.lam)", "loss = torch.add(ce, cmi, alpha=self.lam)", MCMI_T),
    (MCMI, "d = pd.addcmul_(p, kl[:, None], value=-1.0)", "d = pd", MCMI_T),
    (MCMI, "            dist.all_reduce(stats)\n", "", DDP_MCMI_T),
    (MCMI, "present = counts > 0", "present = counts >= 0", MCMI_T),
    (
        MCMI,
        "weight = self.class_seen.to(stored.dtype).mul_(self.momentum)[:, None]",
        "weight = torch.full_like(self.class_seen, True, dtype=stored.dtype).mul_(self.momentum)[:, None]",
        MCMI_T,
    ),
    (
        MCMI,
        "updated = torch.where(present[:, None], torch.lerp(batch_mean, stored, weight), stored)",
        "updated = torch.lerp(batch_mean, stored, weight)",
        MCMI_T,
    ),
    (MCMI, "        self.class_seen |= present\n", "", MCMI_T),
    (MCMI, "if not self.training or in_auxiliary_pass():", "if not self.training:", MCMI_T),
    # ---- fisher/masks.py
    (MASKS, 'return [".".join(parts[: i + 1]) for i in range(len(parts))]', "return [name]", MASKS_T),
    (
        MASKS,
        "budget = max(1, math.floor(keep_ratio * total + 1e-6))",
        "budget = max(1, math.floor(keep_ratio * total))",
        MASKS_T,
    ),
    (
        MASKS,
        'candidates -= match_parameter_names(names, exclude, "exclude") | always',
        'candidates -= match_parameter_names(names, exclude, "exclude")',
        MASKS_T,
    ),
    (MASKS, "    if n_always > budget:", "    if n_always >= budget:", MASKS_T),
    (MASKS, "    if remaining > n_candidates:", "    if False:", MASKS_T),
    (
        MASKS,
        "threshold = torch.kthvalue(flat, flat.numel() - remaining + 1).values",
        "threshold = torch.kthvalue(flat, flat.numel() - remaining).values",
        MASKS_T,
    ),
    (MASKS, "keep = flat > threshold", "keep = flat >= threshold", MASKS_T),
    (MASKS, "[: remaining - int(keep.sum())]  # lowest", "[int(keep.sum()) - remaining :]  # lowest", MASKS_T),
    (
        MASKS,
        "masks = {n: torch.full_like(fisher[n], n in always, dtype=torch.bool) for n in names}",
        "masks = {n: torch.full_like(fisher[n], False, dtype=torch.bool) for n in names}",
        MASKS_T,
    ),
    # ---- fisher/fisher.py
    (
        FISHER,
        'return nn.functional.cross_entropy(output, target, reduction="sum")',
        'return nn.functional.cross_entropy(output, target, reduction="mean")',
        FISHER_T,
    ),
    (
        FISHER,
        "rows = min(_num_rows(inputs, targets), num_samples - seen)",
        "rows = _num_rows(inputs, targets)",
        FISHER_T,
    ),
    (
        FISHER,
        "        if seen >= num_samples:  # here",
        "        if seen > num_samples:  # here",
        FISHER_T,
    ),
    (
        FISHER,
        "held, held_rows = [(_rows(x, chunk_size, held_rows), y[chunk_size:])], held_rows - chunk_size",
        "held, held_rows = [], 0",
        FISHER_T,
    ),
    (FISHER, "    if held_rows:\n        yield _cat(held)", "    pass", FISHER_T),
    (FISHER, "                y = _sample_labels(model, x, generator)", "                pass", FISHER_T),
    (FISHER, "            module.training = flag", "            pass", FISHER_T),
    # survives (not listed as equivalent: unproven): the stride-0 branch is only reached here by a parameter the
    # output does not use, whose gradient is 0; a Linear bias or an added parameter under a loss linear in the output
    # came back from vmap materialised, not expanded
    (FISHER, "fisher[name] += g[0].square() * g.shape[0]", "fisher[name] += g[0].square()", FISHER_T),
    (FISHER, "fisher[name] += g.square_().sum(0)", "fisher[name] += g.sum(0).square()", FISHER_T),
    (FISHER, "                fisher[name] += g.pow(2)", "                fisher[name] += g.abs()", FISHER_T),
    (FISHER, "out[name] = 0.5 * f * theta.to(f.dtype).pow(2)", "out[name] = f * theta.to(f.dtype).pow(2)", FISHER_T),
    (FISHER, "    if seen < num_samples:\n        warnings.warn", "    if False:\n        warnings.warn", FISHER_T),
    # ---- callbacks/fisher_mask.py
    (FISHER_MASK, "            torch.distributed.broadcast(flat_mask, src=0)", "            pass", DDP_FISHER_T),
    # ---- functional/spectral.py
    (SPECTRAL, "kept = torch.where(eigenvalues > tol, eigenvalues, 0.0)", "kept = eigenvalues", SPECTRAL_T),
    (SPECTRAL, "return kept / kept.sum()", "return kept / kept.max()", SPECTRAL_T),
    (
        SPECTRAL,
        "return torch.from_numpy(a.T @ a if transposed else a @ a.T)",
        "return torch.from_numpy(a @ a.T)",
        SPECTRAL_T,
    ),
    (SPECTRAL, "        z = z - z.mean(dim=0, keepdim=True)\n    z, norms", "        pass\n    z, norms", SPECTRAL_T),
    (
        SPECTRAL,
        "inverse_norms = torch.where(norms > 0, norms.reciprocal(), 0.0)",
        "inverse_norms = norms.reciprocal()",
        SPECTRAL_T,
    ),
    (
        SPECTRAL,
        "return renyi_entropy(gram_spectrum(z, inverse_norms), order)",
        "return renyi_entropy(gram_spectrum(z), order)",
        SPECTRAL_T,
    ),
    (SPECTRAL, "_UNIT_NORM_TOLERANCE = 1e-4", "_UNIT_NORM_TOLERANCE = 1e-1", SPECTRAL_T),
    (
        SPECTRAL,
        "return torch.exp(renyi_entropy(gram_spectrum(x, norms.reciprocal()), order))",
        "return torch.exp(renyi_entropy(gram_spectrum(x), order))",
        SPECTRAL_T,
    ),
    (
        SPECTRAL,
        'return torch.linalg.svdvals(_centred_unit_rows(check_finite("z", z).to(torch.float64))).sum() / n',
        'return torch.linalg.svdvals(_centred_unit_rows(check_finite("z", z).to(torch.float64))).sum()',
        SPECTRAL_T,
    ),
    (SPECTRAL, "squares = (zf - zf.mean(dim=0, keepdim=True)).square_()", "squares = zf.square()", SPECTRAL_T),
    (
        SPECTRAL,
        "        column_norms = torch.topk(column_norms, n, sorted=False).values\n",
        "        pass\n",
        SPECTRAL_T,
    ),
    (
        SPECTRAL,
        "value = _l12_column_norms(zf / zf.abs().amax(), n, d)",
        "value = _l12_column_norms(zf, n, d)",
        SPECTRAL_T,
    ),
    (SPECTRAL, "        x = x / x.abs().amax()\n", "        pass\n", SPECTRAL_T),
    # ---- functional/diffusion_spectral.py
    (
        DSE,
        "kernel = torch.exp(-torch.cdist(z, z).pow(2) / (2.0 * sigma**2))",
        "kernel = torch.exp(-torch.cdist(z, z).pow(2) / sigma**2)",
        DSE_T,
    ),
    (DSE, "inv_sqrt_degree = kernel.sum(dim=-1).rsqrt()", "inv_sqrt_degree = kernel.sum(dim=-1).reciprocal()", DSE_T),
    (
        DSE,
        "        return torch.zeros(z.shape[:-2], dtype=z.dtype, device=z.device)",
        "        return torch.ones(z.shape[:-2], dtype=z.dtype, device=z.device)",
        DSE_T,
    ),
    (DSE, "magnitudes = torch.where(magnitudes > n * torch.finfo(z.dtype).eps, magnitudes, 0.0)", "pass", DSE_T),
    (DSE, "powered = magnitudes.pow(t)", "powered = magnitudes", DSE_T),
    (
        DSE,
        "return plogp_entropy(powered / powered.sum(dim=-1, keepdim=True), dim=-1) / scale",
        "return plogp_entropy(powered / powered.sum(dim=-1, keepdim=True), dim=-1)",
        DSE_T,
    ),
    (DSE, "keys = z if labels is None else torch.cat([z, labels.to(z.dtype)[:, None]], dim=1)", "keys = z", DSE_T),
    (DSE, "    if max_samples is None or n <= max_samples:", "    if max_samples is None or n < max_samples:", DSE_T),
    (DSE, "        z = z[_canonical_order(z)][index.to(z.device)]", "        z = z[index.to(z.device)]", DSE_T),
    (DSE, "    z, labels = z[order], labels[order]\n", "", DSE_T),
    (
        DSE,
        "unconditional = None if matched else _dse(z, sigma_, t_, scale)",
        "unconditional = _dse(z, sigma_, t_, scale)",
        DSE_T,
    ),
    (DSE, "for _ in range(repetitions)])", "for _ in range(1)])", DSE_T),
    (
        DSE,
        "mutual_information = mutual_information + (count / n) * (reference - conditional)",
        "mutual_information = mutual_information + (reference - conditional) / len(classes)",
        DSE_T,
    ),
    (
        DSE,
        "reference = _dse(z[subsets.to(z.device)], sigma_, t_, scale).mean()",
        "reference = _dse(z[subsets.to(z.device)], sigma_, t_, scale)[0]",
        DSE_T,
    ),
    # ---- callbacks/loss_term.py
    (LOSS_TERM, "if output is None or not self.module.automatic_optimization:", "if output is None:", LOSS_TERM_T),
    (
        LOSS_TERM,
        "            if term is None:\n                continue",
        "            if term is None:\n                break",
        LOSS_TERM_T,
    ),
    (LOSS_TERM, '        if stage != "fit":\n            return\n', "", LOSS_TERM_T),
    (
        LOSS_TERM,
        "if self.check_finite and not bool(torch.isfinite(term.detach()).all()):",
        "if self.check_finite and bool(torch.isnan(term.detach()).any()):",
        LOSS_TERM_T,
    ),
    (LOSS_TERM, "total = total + callback.weight * term", "total = total + term", LOSS_TERM_T),
    (
        LOSS_TERM,
        'return {**output, "loss": self._check_user_loss(output["loss"]) + total}',
        "return output",
        LOSS_TERM_T,
    ),
    (LOSS_TERM, "return self._check_user_loss(output) + total", "return self._check_user_loss(output)", LOSS_TERM_T),
    (
        LOSS_TERM,
        "original_backward(self._check_user_loss(loss) + total, *args, **kwargs)",
        "original_backward(self._check_user_loss(loss), *args, **kwargs)",
        LOSS_TERM_T,
    ),
    (
        LOSS_TERM,
        "checking and isinstance(loss, Tensor) and not bool(torch.isfinite(loss.detach()).all())",
        "False",
        LOSS_TERM_T,
    ),
    (
        LOSS_TERM,
        "self.module.log(callback.log_key, term.detach().float(), on_step=True, on_epoch=False)",
        "pass",
        LOSS_TERM_T,
    ),
    (
        LOSS_TERM,
        "        if self not in dispatcher.callbacks:\n            dispatcher.callbacks.append(self)",
        "        dispatcher.callbacks.append(self)",
        LOSS_TERM_T,
    ),
    (LOSS_TERM, "            dispatcher.restore()\n", "", LOSS_TERM_T),
    (
        LOSS_TERM,
        "    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:\n"
        "        self._unregister(pl_module)",
        "    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:\n"
        "        pass",
        LOSS_TERM_T,
    ),
    (
        LOSS_TERM,
        "if not isinstance(term, Tensor) or term.numel() != 1:",
        "if not isinstance(term, Tensor):",
        LOSS_TERM_T,
    ),
    (
        LOSS_TERM,
        'self.batch_idx = args[1] if len(args) > 1 else kwargs.get("batch_idx", 0)',
        "self.batch_idx = 0",
        LOSS_TERM_T,
    ),
    # ---- _internal/capture.py
    (CAPTURE, "        if pattern in names:\n            hits.append(pattern)", "        pass", CAPTURE_T),
    (CAPTURE, "return [n for n in names if n in matched]", "return sorted(matched)", CAPTURE_T),
    (
        CAPTURE,
        "            found = _first_tensor(item)\n            if found is not None:\n                return found",
        "            return _first_tensor(item)",
        CAPTURE_T,
    ),
    (
        CAPTURE,
        "return _first_tensor(args) if args else _first_tensor(list(kwargs.values()))",
        "return _first_tensor(args)",
        CAPTURE_T,
    ),
    (
        CAPTURE,
        "self.every_pass = not detach if every_pass is None else every_pass",
        "self.every_pass = False if every_pass is None else every_pass",
        CAPTURE_T,
    ),
    (
        CAPTURE,
        "if not self.enabled or (not self.every_pass and in_auxiliary_pass()):",
        "if not self.enabled:",
        CAPTURE_T,
    ),
    (CAPTURE, "            value = value.detach()\n", "            pass\n", CAPTURE_T),
    (
        CAPTURE,
        "if self.accumulate and isinstance(previous, Tensor) and value.ndim > 0:",
        "if isinstance(previous, Tensor) and value.ndim > 0:",
        CAPTURE_T,
    ),
    (
        CAPTURE,
        "if self.max_samples is not None and previous.shape[0] >= self.max_samples:",
        "if self.max_samples is not None and previous.shape[0] > self.max_samples:",
        CAPTURE_T,
    ),
    (CAPTURE, "            value = value[: self.max_samples]", "            pass", CAPTURE_T),
    (CAPTURE, "        self.clear()\n", "", CAPTURE_T),
    (CAPTURE, "        if not self._handles:\n            modules", "        if True:\n            modules", CAPTURE_T),
]

MUTANTS = [Mutant(f, o, r, t) for f, o, r, t in _RAW]

#: mutants that cannot change behaviour, with the reason (not run, not counted)
EQUIVALENT: dict[str, str] = {
    "sharpness_aware:1645e908": (  # if len({(n.dtype, n.device) for n in norms}) > 1 -> if False
        "on one device torch.stack promotes mixed dtypes to the widest itself; the cast only matters for norms on "
        "different devices (CPU + CUDA), which a CPU run cannot build"
    ),
    "kernels:7fb86d0e": (  # log_k.clamp_min(_KERNEL_FLOOR).exp() -> log_k.exp()
        "every kernel sum the floor enters has a unit diagonal term (>= 1), so raising values below exp(-40) to "
        "exp(-40) changes a log-sum by at most N * 4e-18 relative: below float32 resolution and ~1e-14 in float64 at "
        "N = 1e4, nothing an independent reference can pin. The floor keeps products of two kernel values out of "
        "float32's subnormal range (speed), not the values"
    ),
    "capture:b5fa8149": (  # previous.shape[0] >= self.max_samples -> > self.max_samples
        "with exactly max_samples rows stored, cat([previous, value])[:max_samples] is previous again (same values); "
        "the early return only skips that copy"
    ),
}


def _copy_repository(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "*.egg-info")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, target / name)


def _run_mutant(mutant: Mutant, copy: Path, timeout: float) -> tuple[str, float]:
    """Apply ``mutant`` to ``copy``, run its tests, restore; ``("killed"|"survived"|"timeout", seconds)``."""
    path = copy / mutant.file
    original = path.read_text()
    path.write_text(original.replace(mutant.original, mutant.replacement, 1))
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "-p", "no:cacheprovider",
               "-m", "not gpu" if mutant.tests in SLOW_OK else "not slow and not gpu", *mutant.tests]  # fmt: skip
    start = time.perf_counter()
    try:
        result = subprocess.run(
            command, cwd=copy, env=env, capture_output=True, timeout=timeout, start_new_session=True
        )
        outcome = "survived" if result.returncode == 0 else "killed"
        if result.returncode in (4, 5):  # usage error / no tests collected: the mutant list is wrong, not killed
            outcome = "error"
    except subprocess.TimeoutExpired:
        outcome = "timeout"
    finally:
        path.write_text(original)
    return outcome, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the selected mutants; print each outcome, the score and the survivors."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="run the mutants whose id or file contains PATTERN (comma-separated: any)")
    parser.add_argument("--jobs", type=int, default=1, help="parallel copies (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutant (default 300)")
    parser.add_argument("--goal", type=float, default=0.95)
    parser.add_argument("--list", action="store_true", help="print the mutant ids and exit")
    args = parser.parse_args(argv)

    stale = [m for m in MUTANTS if not m.exists()]
    if stale:
        for m in stale:
            print(f"STALE (snippet not found exactly once): {m.file}: {m.original!r}")
        return 2
    ids = {m.id for m in MUTANTS}
    if len(ids) != len(MUTANTS):
        print("DUPLICATE mutants (same file, snippet and replacement) in the list")
        return 2
    unknown = sorted(set(EQUIVALENT) - ids)
    if unknown:
        print(f"EQUIVALENT names mutants that are not in the list: {unknown}")
        return 2
    selected = [m for m in MUTANTS if m.id not in EQUIVALENT]
    if args.only:
        patterns = args.only.split(",")
        selected = [m for m in selected if any(p in m.id or p in m.file for p in patterns)]
    if args.list:
        print("\n".join(m.label for m in selected))
        return 0
    print(f"{len(selected)} mutants ({len(MUTANTS)} in the list, {len(EQUIVALENT)} equivalent), {args.jobs} job(s)")

    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        copies: queue.Queue[Path] = queue.Queue()
        for i in range(max(1, args.jobs)):
            copy = Path(tmp) / f"copy{i}"
            copy.mkdir()
            _copy_repository(copy)
            copies.put(copy)

        def work(mutant: Mutant) -> tuple[Mutant, str, float]:
            copy = copies.get()
            try:
                return (mutant, *_run_mutant(mutant, copy, args.timeout))
            finally:
                copies.put(copy)

        start = time.perf_counter()
        results: list[tuple[Mutant, str, float]] = []
        with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
            for mutant, outcome, seconds in pool.map(work, selected):
                results.append((mutant, outcome, seconds))
                print(f"{outcome:8s} {seconds:6.1f}s  {mutant.label}", flush=True)
        total = time.perf_counter() - start

    killed = sum(outcome in ("killed", "timeout") for _, outcome, _ in results)
    counted = sum(outcome != "error" for _, outcome, _ in results)
    score = killed / counted if counted else 1.0
    print(f"\nscore: {killed}/{counted} killed ({100 * score:.1f}%) in {total:.0f}s")
    for mutant, outcome, _ in results:
        if outcome in ("survived", "error"):
            change = f"{mutant.original.strip()!r} -> {mutant.replacement.strip()!r}"
            print(f"{outcome.upper()} {mutant.id}: {mutant.file}: {change}")
    return 0 if score >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
