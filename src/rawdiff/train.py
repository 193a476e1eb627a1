"""``rawdiff train``: run one experiment described by a YAML config with Lightning.

Every run gets a folder ``<logdir>/<timestamp>_<name>/`` holding the merged config
(``config.yaml``), CSV and TensorBoard logs, checkpoints (``checkpoints/last.ckpt`` is
only for resuming) and, at the end, a model directory (``model/``) with safetensors
weights that :class:`rawdiff.codec.Codec` loads.
"""

from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional, Sequence

from rawdiff.config import instantiate, load_config, load_configs, save_config

# Lightning's DDP launcher starts the other ranks as new processes running the same command;
# they learn the run folder that rank 0 made from this variable.
RUN_DIR_ENV = "RAWDIFF_RUN_DIR"


def resolve_resume(resume: str, bases: Sequence[str]):
    """``--resume`` takes a checkpoint or a run folder (then its last.ckpt and config)."""
    if os.path.isdir(resume):
        ckpt = os.path.join(resume, "checkpoints", "last.ckpt")
        run_dir = resume
        if not bases:
            bases = [os.path.join(resume, "config.yaml")]
    else:
        ckpt = resume
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(resume)))
    if not os.path.isfile(ckpt):
        raise FileNotFoundError("checkpoint %s does not exist" % ckpt)
    return ckpt, run_dir, list(bases)


def _strategy(name: str):
    if name in ("ddp", "ddp_spawn"):
        from lightning.pytorch.strategies import DDPStrategy

        # The discriminator takes no part in the generator's first steps (disc_start),
        # so DDP must allow parameters without gradients.
        return DDPStrategy(find_unused_parameters=True, start_method="spawn" if name == "ddp_spawn" else "popen")
    return name


def train(bases: Sequence[str], overrides: Sequence[str] = (), resume: Optional[str] = None,
          do_train: bool = True, accelerator: str = "auto", devices: Any = "auto",
          max_epochs: Optional[int] = None, max_steps: Optional[int] = None,
          log_every_n_steps: int = 50, strategy: str = "auto", logdir: str = "runs",
          name: Optional[str] = None, seed: int = 23, export: Optional[str] = None) -> Dict[str, Any]:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from rawdiff.device import training_precision

    ckpt = None
    if resume:
        ckpt, run_dir, bases = resolve_resume(resume, bases)
    if not bases:
        raise ValueError("no config given: use --base CONFIG.yaml (or --resume RUN_DIR)")
    cfg = load_configs(bases, overrides)
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(RUN_DIR_ENV):
        run_dir = os.environ[RUN_DIR_ENV]  # a DDP worker started by rank 0: share its run
    elif not resume:
        name = name or os.path.splitext(os.path.basename(bases[-1]))[0]
        run_dir = os.path.join(logdir, time.strftime("%Y-%m-%dT%H-%M-%S") + "_" + name)
    os.makedirs(run_dir, exist_ok=True)
    os.environ[RUN_DIR_ENV] = run_dir  # inherited by the processes DDP launches

    trainer_cfg: Dict[str, Any] = dict((cfg.get("lightning") or {}).get("trainer") or {})
    cli = dict(accelerator=accelerator, devices=devices, strategy=strategy,
               max_epochs=max_epochs, max_steps=max_steps, log_every_n_steps=log_every_n_steps)
    for key, value in cli.items():
        if value is not None and (value != "auto" or key not in trainer_cfg):
            trainer_cfg[key] = value
    precision = training_precision(trainer_cfg.get("precision"), str(trainer_cfg.get("accelerator", "auto")))
    if precision != trainer_cfg.get("precision"):
        print("rawdiff train: precision %s -> %s (this CPU has no native bfloat16)"
              % (trainer_cfg["precision"], precision), flush=True)
        trainer_cfg["precision"] = precision
    cfg.setdefault("lightning", {})["trainer"] = dict(trainer_cfg)
    save_config(cfg, os.path.join(run_dir, "config.yaml"))

    L.seed_everything(seed, workers=True)
    model = instantiate(cfg["model"])
    data = instantiate(cfg["data"])
    ckpt_every = int((cfg.get("lightning") or {}).get("checkpoint_every_n_steps", 500))
    callbacks: List[Any] = [
        ModelCheckpoint(dirpath=os.path.join(run_dir, "checkpoints"), save_last=True, save_top_k=0,
                        every_n_train_steps=ckpt_every),
        TQDMProgressBar(refresh_rate=max(1, int(log_every_n_steps) // 5)),
    ]
    # version=None: a resumed run logs into csv/version_1, ... and keeps the earlier logs
    loggers = [CSVLogger(run_dir, name="csv"), TensorBoardLogger(run_dir, name="tb")]
    trainer_cfg["strategy"] = _strategy(trainer_cfg.get("strategy", "auto"))
    trainer = L.Trainer(default_root_dir=run_dir, callbacks=callbacks, logger=loggers, **trainer_cfg)

    started = time.time()
    steps = None
    if do_train:
        trainer.fit(model, datamodule=data, ckpt_path=ckpt)
        # the last checkpoint holds where training stopped (a wall-time limit stops between
        # the periodic checkpoints): a resumed run or an export of it loses no step
        trainer.save_checkpoint(os.path.join(run_dir, "checkpoints", "last.ckpt"))
    elif ckpt:
        import torch

        state = torch.load(ckpt, map_location="cpu", weights_only=True)  # our own checkpoint
        model.load_state_dict(state["state_dict"])
        steps = int(state.get("global_step", 0))  # an export of a checkpoint records its training
    wall = time.time() - started
    steps = int(trainer.global_step) if steps is None else steps

    summary: Dict[str, Any] = {"run_dir": run_dir, "global_step": steps, "wall_s": wall}
    if trainer.is_global_zero:
        from rawdiff.export.model_dir import export_model

        out = export or os.path.join(run_dir, "model")
        summary["model_dir"] = export_model(model, cfg, out, data=data, training={
            "bases": list(bases), "overrides": list(overrides), "global_step": steps,
            "wall_s": round(wall, 1), "accelerator": str(trainer.accelerator.__class__.__name__),
            "devices": int(trainer.num_devices), "run_dir": os.path.basename(os.path.normpath(run_dir))})
        print("rawdiff train: %d steps in %.0f s; run %s; model %s"
              % (steps, wall, run_dir, summary["model_dir"]))
    return summary


__all__ = ["train", "resolve_resume", "load_config"]
