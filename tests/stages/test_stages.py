"""Every stage trains on a tiny preset; stages chain strictly; frozen parts stay frozen."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from grain_pl.losses import LossWeights
from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3
from grain_pl.training import InitFromStage
from grain_pl.weights.io import CheckpointError

PRESET = "tiny-32-lr8"
STAGES = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}


def make_stage(name: str, prior_file, **kwargs):
    weights = LossWeights(identity=0.0, lr=0.1 if name in ("stage1", "final") else 0.0)
    prior = None if name == "stage1" else str(prior_file)
    return STAGES[name](network=PRESET, prior_path=prior, loss_weights=weights, r1_every=1, **kwargs)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[key], value) for key, value in module.state_dict().items()
               if value.is_floating_point())


@pytest.mark.parametrize("name", list(STAGES))
def test_fast_dev_run_trains_only_the_stage_parts(name, prior_file, datamodule, trainer_kwargs):
    stage = make_stage(name, prior_file)
    parts = ("encoder", "decoder", "latent_codes", "fusion", "generator")
    before = {part: snapshot(getattr(stage.grain, part)) for part in parts}
    d_before = snapshot(stage.discriminator)
    pl.Trainer(fast_dev_run=True, **trainer_kwargs).fit(stage, datamodule=datamodule)
    for part in parts:
        assert changed(before[part], getattr(stage.grain, part)) == (part in stage.trainable_parts), part
    assert changed(d_before, stage.discriminator)  # the discriminator step ran
    assert stage.iteration == 1 and stage.discriminator_steps == 1


def test_frozen_parts_have_no_grad_and_stay_in_eval(prior_file):
    stage = make_stage("stage3", prior_file).train()
    assert stage.grain.fusion.training
    for part in ("encoder", "decoder", "latent_codes", "generator"):
        assert not getattr(stage.grain, part).training, part
        assert not any(p.requires_grad for p in getattr(stage.grain, part).parameters()), part
    assert not stage.grain.quantize.training  # frozen encoder: the LR is rounded, as at test time


def test_final_stage_freezes_the_head_no_loss_reaches(prior_file):
    stage = make_stage("final", prior_file)
    head = stage.grain.latent_codes.blocks[-1]
    assert not any(p.requires_grad for p in head.odd_linear.parameters())
    assert all(p.requires_grad for p in head.even_linear.parameters())
    optimized = {id(p) for group in stage.configure_optimizers()[0].param_groups for p in group["params"]}
    assert id(head.odd_linear.weight) not in optimized
    assert not any(p.requires_grad for p in stage.grain.decoder.to_hr.parameters())


def test_stages_after_the_first_need_a_prior():
    with pytest.raises(ValueError, match="needs a StyleGAN2 prior: set prior_path"):
        Stage2(network=PRESET, loss_weights=LossWeights(identity=0.0))


def test_identity_loss_without_weights_says_how_to_get_them():
    with pytest.raises(ValueError, match="model_ir_se50.pth"):
        Stage1(network=PRESET, loss_weights=LossWeights(identity=0.1))


def test_checkpoints_leave_out_the_frozen_prior_and_loss_networks(prior_file, datamodule, trainer_kwargs, tmp_path):
    stage = make_stage("stage2", prior_file)
    trainer = pl.Trainer(max_steps=1, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(stage, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "s2.ckpt")
    state = torch.load(tmp_path / "s2.ckpt", map_location="cpu", weights_only=True)
    keys = state["state_dict"].keys()
    assert not any(key.startswith(("grain.generator.", "perceptual.")) for key in keys)
    assert any(key.startswith("grain.latent_codes.") for key in keys)
    assert state["grain_pl"]["iteration"] == 1
    again = make_stage("stage2", prior_file)
    again.on_load_checkpoint(state)
    again.load_state_dict(state["state_dict"])  # strict: the frozen parts were filled back in
    assert again.iteration == 1


def test_stage2_starts_from_stage1_and_keeps_it_frozen(prior_file, datamodule, trainer_kwargs, tmp_path):
    stage1 = make_stage("stage1", prior_file)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, **trainer_kwargs)
    trainer.fit(stage1, datamodule=datamodule)
    trainer.save_checkpoint(tmp_path / "stage1.ckpt")

    stage2 = make_stage("stage2", prior_file)
    trainer = pl.Trainer(max_steps=2, limit_val_batches=0, callbacks=[InitFromStage(str(tmp_path / "stage1.ckpt"))],
                         **trainer_kwargs)
    trainer.fit(stage2, datamodule=datamodule)
    for part in ("encoder", "decoder"):
        mine, theirs = getattr(stage2.grain, part).state_dict(), getattr(stage1.grain, part).state_dict()
        assert all(torch.equal(mine[key], theirs[key]) for key in theirs), part
    assert stage2.hparams["init_from"] == {"checkpoint": str(tmp_path / "stage1.ckpt"),
                                           "parts": ["encoder", "decoder"]}


def test_a_checkpoint_of_another_preset_fails_loudly(prior_file, tmp_path):
    other = Stage1(network="tiny-64-lr8", loss_weights=LossWeights(identity=0.0, adversarial=0.0))
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    stage2 = make_stage("stage2", prior_file)
    with pytest.raises(CheckpointError, match=r"other\.ckpt: does not fit grain\.encoder of Stage2"):
        stage2.load_parts(tmp_path / "other.ckpt", ("encoder", "decoder"))


def test_export_path_is_checked_before_training(prior_file, datamodule, trainer_kwargs, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"precious")
    stage = make_stage("final", prior_file, export_path=str(tmp_path / "model.safetensors"))
    with pytest.raises(FileExistsError, match="model.safetensors: the export file already exists"):
        pl.Trainer(max_steps=1, **trainer_kwargs).fit(stage, datamodule=datamodule)
    assert (tmp_path / "model.safetensors").read_bytes() == b"precious"
    assert stage.iteration == 0


def test_final_stage_exports_a_model_file(prior_file, datamodule, trainer_kwargs, tmp_path):
    from grain_pl.weights.grain_checkpoint import load_grain

    stage = make_stage("final", prior_file, export_path=str(tmp_path / "model.safetensors"))
    pl.Trainer(max_steps=1, limit_val_batches=0, **trainer_kwargs).fit(stage, datamodule=datamodule)
    loaded = load_grain(tmp_path / "model.safetensors")
    assert torch.equal(loaded.fusion.head[0].weight, stage.grain.fusion.head[0].weight)
    assert torch.equal(loaded.generator.style[1].weight, stage.grain.generator.style[1].weight)


@pytest.mark.parametrize("parameterisation", ["free", "bicubic_residual"])
def test_each_stage_trains_the_outputs_the_model_decodes(parameterisation, prior_file):
    """Stage 2's y_inv and stage 3's hr_out are the model's own (GRAIN.decode's), under either HR
    parameterisation: a stage that left out the bicubic base would train the fusion to make the whole image,
    which decode then adds to y_inv a second time."""
    torch.manual_seed(0)
    overrides = {"hr_parameterisation": parameterisation}
    stage2 = make_stage("stage2", prior_file, network_overrides=overrides).eval()
    stage3 = make_stage("stage3", prior_file, network_overrides=overrides).eval()
    for stage in (stage2, stage3):
        for parameter in stage.grain.parameters():  # no zero-initialised head: every term counts
            parameter.data.normal_(0, 0.05)
    stage3.grain.load_state_dict(stage2.grain.state_dict())
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = stage3.grain(hr)
        assert torch.allclose(stage2.generate(hr).y_inv, expected.y_inv, atol=1e-6)
        produced = stage3.generate(hr)
    assert torch.allclose(produced.y_inv, expected.y_inv, atol=1e-6)
    assert torch.allclose(produced.hr_out, expected.hr_out, atol=1e-5)
