"""A stage's training step with the training-memory levers (MemoryOptions) against today's path: same losses and
gradients, with the stage's real generate and losses (pixel, LPIPS, LR guidance, adversarial).

Compared in float64: the two paths sum in different orders, and in float32 the rounding, amplified through the
networks, reaches 3e-4 of a gradient on an AVX2-only CPU (1e-5 on AVX-512 ones); in float64 they agree to 1e-14."""

from __future__ import annotations

import pytest
import torch
from stage_priors import write_random_prior  # tests/stages/stage_priors.py

from grain_pl.losses import LossWeights
from grain_pl.networks.training_memory import MemoryOptions
from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3

PRESET = "tiny-64-lr8"  # 64 px: the head's strips of 8 rows cut it
STAGES = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}


@pytest.fixture(scope="module")
def prior_64(tmp_path_factory):
    return write_random_prior(PRESET, tmp_path_factory.mktemp("prior"))


def generator_step(name: str, prior: str, memory: MemoryOptions, hr_parameterisation: str = "free"
                   ) -> tuple[dict, dict]:
    torch.manual_seed(0)
    weights = LossWeights(identity=0.0, lr=STAGES[name].default_lr_weight)
    stage = STAGES[name](network=PRESET, prior_path=None if name == "stage1" else prior, loss_weights=weights,
                         memory=memory, metrics_lpips=False,
                         network_overrides={"hr_parameterisation": hr_parameterisation})
    stage.train()
    stage.grain.quantize.eval()  # the same LR on both sides
    stage.grain.prior_noise = "const"
    with torch.no_grad():
        stage.grain.fusion.head[-1].weight.mul_(20)  # an output far from 0, so that a wrong pixel shows
        # y_inv's head as stage 1 leaves it, not at its zero start (bicubic_residual): the output then passes the
        # gradient through y_inv to the decoder's trunk, which a y_inv computed without autograd would drop
        torch.nn.init.normal_(stage.grain.decoder.to_hr[-1].weight, std=0.05)
    hr = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = stage.generate(hr)
    total, logs = stage.generator_losses(out, hr)
    total.backward()
    grads = {name: p.grad.clone() for name, p in stage.named_parameters() if p.grad is not None}
    return logs, grads


# "bicubic_residual": the fusion refines y_inv, so the final stage's loss reads y_inv (through its frozen head, into
# the decoder's trunk): y_inv must keep its graph there
@pytest.mark.parametrize("hr_parameterisation", ["free", "bicubic_residual"])
@pytest.mark.parametrize("name", list(STAGES))
def test_a_lean_step_equals_todays(name, hr_parameterisation, prior_64):
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        expected_logs, expected_grads = generator_step(name, prior_64, MemoryOptions.baseline(), hr_parameterisation)
        logs, grads = generator_step(name, prior_64, MemoryOptions(head_strips=8, generator_checkpoint_size=16,
                                                                   decoder_checkpoint_size=32), hr_parameterisation)
    finally:
        torch.set_default_dtype(default)
    assert logs.keys() == expected_logs.keys() and grads.keys() == expected_grads.keys()
    assert grads  # the step trains something
    assert all(grad.dtype == torch.float64 for grad in grads.values())
    for key, value in expected_logs.items():
        torch.testing.assert_close(logs[key], value, rtol=1e-10, atol=1e-12, msg=key)
    for key, grad in expected_grads.items():
        scale = max(1.0, grad.abs().max().item())
        torch.testing.assert_close(grads[key], grad, rtol=0, atol=1e-10 * scale, msg=key)


def test_the_final_stage_keeps_no_graph_for_y_inv(prior_64):
    stage = FinalStage(network=PRESET, prior_path=prior_64, loss_weights=LossWeights(identity=0.0), metrics_lpips=False)
    out = stage.generate(torch.rand(1, 3, 64, 64) * 2 - 1)
    assert out.y_inv.grad_fn is None and out.hr_out.grad_fn is not None
    baseline = FinalStage(network=PRESET, prior_path=prior_64, loss_weights=LossWeights(identity=0.0),
                          metrics_lpips=False, memory=MemoryOptions.baseline())
    assert baseline.generate(torch.rand(1, 3, 64, 64) * 2 - 1).y_inv.grad_fn is not None
    stage1 = Stage1(network=PRESET, loss_weights=LossWeights(identity=0.0), metrics_lpips=False)
    assert stage1.generate(torch.rand(1, 3, 64, 64) * 2 - 1).y_inv.grad_fn is not None  # stage 1 trains on it


def test_memory_options_are_plain_hyper_parameters(prior_64):
    stage = Stage3(network=PRESET, prior_path=prior_64, loss_weights=LossWeights(identity=0.0), metrics_lpips=False,
                   memory=MemoryOptions(head_strips=64))
    assert stage.hparams["memory"]["head_strips"] == 64
    assert isinstance(stage.hparams["memory"], dict)

