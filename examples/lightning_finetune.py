"""Fine-tune a pretrained network with PyTorch Lightning and a muonlab optimizer.

    pip install "pytorch-lightning>=2.6"           # or: pip install ".[dev]"
    python examples/lightning_finetune.py          # pretrain on task A, fine-tune on task B
    python examples/lightning_finetune.py --optimizer normuon --epochs 6 --ckpt-dir runs/ft
    python examples/lightning_finetune.py --tiny   # a few steps at toy size (what the tests run)

The muonlab part is ``configure_optimizers``: it routes the parameters with
``muonlab.param_groups`` (the backbone's hidden matrices are orthogonalized; the freshly
initialised classification head, norms and biases use AdamW) and returns the optimizer with a
per-step scheduler. Lightning saves and restores the optimizer and scheduler state in its
checkpoints like any ``torch.optim.Optimizer``'s; ``--ckpt-dir`` resumes from ``last.ckpt`` there.

The two tasks are synthetic (a fixed random teacher network labels Gaussian inputs), so the example
needs no download: task B shares task A's input features but has a different label set, which is
the situation fine-tuning exists for.
"""

from __future__ import annotations

import argparse
import os

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import muonlab


def teacher_task(n: int, dim: int, classes: int, seed: int) -> TensorDataset:
    """Gaussian inputs labelled by a random two-layer teacher with ``classes`` outputs."""
    g = torch.Generator().manual_seed(seed)
    feature = torch.randn(dim, 4 * dim, generator=torch.Generator().manual_seed(0))  # shared by both tasks
    readout = torch.randn(4 * dim, classes, generator=g)
    x = torch.randn(n, dim, generator=g)
    return TensorDataset(x, (torch.tanh(x @ feature) @ readout).argmax(-1))


class Classifier(pl.LightningModule):
    def __init__(self, dim: int, width: int, classes: int, optimizer: str, lr: float, adamw_lr: float, total_steps: int):
        super().__init__()
        self.save_hyperparameters()
        self.backbone = nn.Sequential(nn.Linear(dim, width), nn.GELU(), nn.LayerNorm(width),
                                      nn.Linear(width, width), nn.GELU(), nn.LayerNorm(width))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True)
        self.log("val_acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        # head=["head"]: the classification layer is an output head, so AdamW, not orthogonalized.
        groups = muonlab.param_groups(self, head=["head"], lr=hp.lr, adamw_lr=hp.adamw_lr)
        opt = muonlab.optimizers()[hp.optimizer](groups, weight_decay=0.01)
        # One cycle over the run, stepped every batch; momentum is left alone (cycle_momentum=False)
        # because muonlab groups carry their own momentum hyperparameters.
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=hp.total_steps, pct_start=0.1,
            cycle_momentum=False,
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", default="muon", choices=sorted(muonlab.optimizers()))
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--adamw-lr", type=float, default=3e-3)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--n", type=int, default=4096, help="examples per task")
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--ckpt-dir", default=None, help="save last.ckpt here and resume from it when present")
    p.add_argument("--tiny", action="store_true", help="toy size, a few steps (smoke test)")
    args = p.parse_args(argv)
    if args.tiny:
        args.epochs, args.n, args.dim, args.width, args.batch_size = 1, 128, 8, 16, 32
    pl.seed_everything(0, verbose=False)

    def loaders(task: TensorDataset) -> tuple[DataLoader, DataLoader]:
        cut = int(0.9 * len(task))
        train, val = torch.utils.data.Subset(task, range(cut)), torch.utils.data.Subset(task, range(cut, len(task)))
        return DataLoader(train, args.batch_size, shuffle=True), DataLoader(val, args.batch_size)

    def trainer(callbacks=()) -> pl.Trainer:
        return pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, logger=False,
                          enable_checkpointing=bool(callbacks), callbacks=list(callbacks),
                          enable_progress_bar=not args.tiny, enable_model_summary=False)

    # 1. Pretrain on task A (10 classes): stands in for the checkpoint you would download.
    train_a, val_a = loaders(teacher_task(args.n, args.dim, 10, seed=1))
    steps = args.epochs * len(train_a)
    base = Classifier(args.dim, args.width, 10, args.optimizer, args.lr, args.adamw_lr, steps)
    trainer().fit(base, train_a, val_a)

    # 2. Fine-tune on task B (4 classes): keep the backbone, replace the head, train everything.
    train_b, val_b = loaders(teacher_task(args.n, args.dim, 4, seed=2))
    model = Classifier(args.dim, args.width, 4, args.optimizer, args.lr, args.adamw_lr, args.epochs * len(train_b))
    model.backbone.load_state_dict(base.backbone.state_dict())
    callbacks, ckpt = (), None
    if args.ckpt_dir:
        callbacks = [pl.callbacks.ModelCheckpoint(dirpath=args.ckpt_dir, save_last=True)]
        last = os.path.join(args.ckpt_dir, "last.ckpt")
        ckpt = last if os.path.exists(last) else None  # optimizer + scheduler state come back with it
    t = trainer(callbacks)
    t.fit(model, train_b, val_b, ckpt_path=ckpt)
    metrics = {k: float(v) for k, v in t.validate(model, val_b, verbose=False)[0].items()}
    print(f"{args.optimizer} fine-tuned: val_loss {metrics['val_loss']:.4f}  val_acc {metrics['val_acc']:.3f}")
    return metrics


if __name__ == "__main__":
    main()
