"""build_optimizer: the official Ranger, RAdam + Lookahead and Adam; their settings, update rule and resume."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from torch import nn

from grain_pl.training.optim import OPTIMIZER_NAMES, build_optimizer

LEARNING_RATE = 0.01


def make_model(dtype: torch.dtype = torch.float64) -> nn.Linear:
    torch.manual_seed(3)
    return nn.Linear(4, 3).to(dtype)  # a 2-D weight (centralised by Ranger) and a 1-D bias (not)


def make_data(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(4)
    return torch.randn(8, 4, generator=generator, dtype=dtype), torch.randn(8, 3, generator=generator, dtype=dtype)


def loss_of(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    inputs, targets = data
    return (model(inputs) - targets).pow(2).sum()


def run_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int) -> None:
    data = make_data(next(model.parameters()).dtype)
    for _ in range(steps):
        optimizer.zero_grad()
        loss_of(model, data).backward()
        optimizer.step()


def official_ranger(model: nn.Module, steps: int, centralize: bool) -> list[torch.Tensor]:
    """The update rule of pSp's Ranger 20.4.11 (docs/method.md §2.4), written out for one parameter at a time."""
    beta1, beta2, eps, alpha, k, threshold = 0.95, 0.999, 1e-5, 0.5, 6, 5
    params = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    first = [torch.zeros_like(p) for p in params]
    second = [torch.zeros_like(p) for p in params]
    slow = [p.detach().clone() for p in params]
    data = make_data(params[0].dtype)
    for step in range(1, steps + 1):
        weight, bias = params
        loss = (data[0] @ weight.T + bias - data[1]).pow(2).sum()
        grads = torch.autograd.grad(loss, params)
        with torch.no_grad():
            for index, (param, grad) in enumerate(zip(params, grads)):
                if centralize and grad.dim() > 1:
                    grad = grad - grad.mean(dim=tuple(range(1, grad.dim())), keepdim=True)
                second[index] = beta2 * second[index] + (1 - beta2) * grad * grad
                first[index] = beta1 * first[index] + (1 - beta1) * grad
                beta2_t = beta2**step
                sma_max = 2 / (1 - beta2) - 1
                sma = sma_max - 2 * step * beta2_t / (1 - beta2_t)
                if sma > threshold:
                    rectifier = math.sqrt((1 - beta2_t) * (sma - 4) / (sma_max - 4) * (sma - 2) / sma
                                          * sma_max / (sma_max - 2))
                    param -= LEARNING_RATE * rectifier / (1 - beta1**step) * first[index] / (second[index].sqrt() + eps)
                else:  # momentum SGD until the variance estimate is usable
                    param -= LEARNING_RATE / (1 - beta1**step) * first[index]
                if step % k == 0:
                    slow[index] += alpha * (param - slow[index])
                    param.copy_(slow[index])
    return [p.detach() for p in params]


@pytest.mark.parametrize(("name", "centralize"), [("ranger", True), ("radam_lookahead", False)])
@pytest.mark.parametrize("steps", [1, 5, 6, 9, 13])
def test_update_rule_matches_the_official_ranger(name: str, centralize: bool, steps: int) -> None:
    # Steps 1-5 are momentum SGD, later ones rectified Adam; Lookahead syncs after steps 6 and 12.
    model = make_model()
    expected = official_ranger(model, steps, centralize)
    run_steps(model, build_optimizer(model.parameters(), name, learning_rate=LEARNING_RATE), steps)
    for param, reference in zip(model.parameters(), expected):
        torch.testing.assert_close(param.detach(), reference, rtol=1e-10, atol=1e-12)


def test_ranger_uses_the_official_settings() -> None:
    optimizer = build_optimizer(make_model().parameters(), "ranger", learning_rate=1e-4)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-4, (0.95, 0.999), 1e-5, 0.0)
    assert (group["alpha"], group["k"]) == (0.5, 6)
    assert optimizer.n_sma_threshold == 5 and optimizer.use_gc and optimizer.gc_gradient_threshold == 1
    assert optimizer.degenerated_to_sgd


def test_radam_lookahead_and_adam_settings() -> None:
    from pytorch_optimizer import Lookahead

    wrapped = build_optimizer(make_model().parameters(), "radam_lookahead", learning_rate=2e-4)
    assert isinstance(wrapped, Lookahead) and isinstance(wrapped.optimizer, torch.optim.RAdam)
    assert (wrapped.k, wrapped.alpha) == (6, 0.5)
    assert wrapped.param_groups[0]["betas"] == (0.95, 0.999) and wrapped.param_groups[0]["lr"] == 2e-4
    adam = build_optimizer(make_model().parameters(), "adam", learning_rate=3e-4)
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["betas"] == (0.9, 0.999) and adam.param_groups[0]["lr"] == 3e-4
    custom = build_optimizer(make_model().parameters(), "ranger", betas=(0.9, 0.99), weight_decay=0.1)
    assert custom.param_groups[0]["betas"] == (0.9, 0.99) and custom.param_groups[0]["weight_decay"] == 0.1


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="name"):
        build_optimizer(make_model().parameters(), "sgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no parameters"):
        build_optimizer([], "adam")
    with pytest.raises(ValueError, match="learning_rate"):
        build_optimizer(make_model().parameters(), "adam", learning_rate=0.0)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_a_restored_optimizer_continues_identically(name: str) -> None:
    original_model = make_model()
    original = build_optimizer(original_model.parameters(), name, learning_rate=LEARNING_RATE)
    run_steps(original_model, original, 4)

    # Through bytes with weights_only=True, the way a Lightning checkpoint is saved and read back.
    buffer = io.BytesIO()
    torch.save({"model": original_model.state_dict(), "optimizer": original.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    restored_model = make_model()
    restored_model.load_state_dict(checkpoint["model"])
    restored = build_optimizer(restored_model.parameters(), name, learning_rate=LEARNING_RATE)
    restored.load_state_dict(checkpoint["optimizer"])

    # 4 + 5 steps crosses the Lookahead sync after step 6 and the RAdam switch after step 5.
    run_steps(original_model, original, 5)
    run_steps(restored_model, restored, 5)
    for param, restored_param in zip(original_model.parameters(), restored_model.parameters()):
        assert torch.equal(param, restored_param)


def test_a_fresh_optimizer_would_have_diverged() -> None:
    # Guards the test above: without loading the state the Lookahead/RAdam trajectory is different.
    original_model = make_model()
    original = build_optimizer(original_model.parameters(), "ranger", learning_rate=LEARNING_RATE)
    run_steps(original_model, original, 4)
    fresh_model = copy.deepcopy(original_model)
    fresh = build_optimizer(fresh_model.parameters(), "ranger", learning_rate=LEARNING_RATE)
    run_steps(original_model, original, 5)
    run_steps(fresh_model, fresh, 5)
    assert not torch.equal(original_model.weight, fresh_model.weight)


class ManualOptimizationModule:
    """Built lazily so that importing this test module does not import Lightning."""

    @staticmethod
    def build(name: str):
        import pytorch_lightning as pl

        class Module(pl.LightningModule):
            def __init__(self) -> None:
                super().__init__()
                self.automatic_optimization = False
                self.model = make_model(torch.float32)
                self.steps_run = 0

            def training_step(self, batch, batch_index):
                self.steps_run += 1
                optimizer = self.optimizers()
                optimizer.zero_grad()
                self.manual_backward(loss_of(self.model, batch))
                optimizer.step()

            def configure_optimizers(self):
                return build_optimizer(self.parameters(), name, learning_rate=LEARNING_RATE)

        return Module()


def _fit(module, max_steps: int, checkpoint_path: str | None = None, save_to: str | None = None) -> None:
    import pytorch_lightning as pl

    trainer = pl.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    batches = [make_data(torch.float32)] * 20
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(batches, batch_size=None),
                ckpt_path=checkpoint_path)
    if save_to is not None:
        trainer.save_checkpoint(save_to)


@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
@pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated")
@pytest.mark.parametrize("name", ["ranger", "radam_lookahead"])
def test_lightning_manual_optimization_and_resume(name: str, tmp_path) -> None:
    by_hand = make_model(torch.float32)
    run_steps(by_hand, build_optimizer(by_hand.parameters(), name, learning_rate=LEARNING_RATE), 9)

    uninterrupted = ManualOptimizationModule.build(name)
    _fit(uninterrupted, 9)
    checkpoint = str(tmp_path / "step4.ckpt")
    _fit(ManualOptimizationModule.build(name), 4, save_to=checkpoint)
    resumed = ManualOptimizationModule.build(name)
    _fit(resumed, 9, checkpoint_path=checkpoint)
    # Only 5 steps ran after the resume, so matching 9 uninterrupted steps needs the restored optimizer state.
    assert (uninterrupted.steps_run, resumed.steps_run) == (9, 5)

    for reference, trained, continued in zip(by_hand.parameters(), uninterrupted.model.parameters(),
                                             resumed.model.parameters()):
        torch.testing.assert_close(trained.detach(), reference.detach(), rtol=0, atol=0)
        torch.testing.assert_close(continued.detach(), reference.detach(), rtol=0, atol=0)
