"""`grain fit|validate|test|predict`: LightningCLI over any stage (its class_path) and GrainDataModule.

    grain fit --config conf/trainer.yaml --config conf/data/celebahq_1024.yaml --config conf/stages/stage1.yaml
    grain fit ... --config conf/stages/stage2.yaml --init_from runs/stage1/checkpoints/last.ckpt
    grain fit ... --ckpt_path runs/stage1/checkpoints/last.ckpt        # resume the same stage
"""

from __future__ import annotations

import time
from collections.abc import Sequence

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(argv: Sequence[str], run: bool = True):
    """`grain fit|validate|test|predict`: LightningCLI over any stage (class_path) and GrainDataModule.

    With run=False (tests, notebooks) it only parses and instantiates; argv then has no subcommand.
    """
    from pytorch_lightning.cli import LightningCLI

    from grain_pl.data import GrainDataModule
    from grain_pl.training import InitFromStage

    class GrainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--init_from", type=str | None, default=None,
                                help="start from this previous-stage checkpoint (the parts the stage inherits)")

        def instantiate_trainer(self, **kwargs):
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("init_from"):
                configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
                configured = configured if isinstance(configured, list) else [configured]
                kwargs["callbacks"] = [*configured, InitFromStage(config["init_from"])]
            return super().instantiate_trainer(**kwargs)

        def _parse_ckpt_path(self) -> None:
            # LightningCLI 2.6 merges a --ckpt_path checkpoint's hyper-parameters *over* the parsed configs: our
            # "stage"/"init_from" records are no __init__ arguments (the parse fails), and a resume could not change
            # e.g. max_iterations. The configs and the command line describe the run; ckpt_path restores its state.
            return

    # every run keeps its resolved config next to its logs, under a name no later run overwrites
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return GrainCLI(None, GrainDataModule, subclass_mode_model=True, args=list(argv), run=run,
                    auto_configure_optimizers=False,
                    save_config_kwargs={"overwrite": False, "config_filename": f"config-{stamp}.yaml"})


