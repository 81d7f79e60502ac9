"""Learning-rate schedules as pure functions of the step (exactly resumable, no pickled state).

* ``multistep`` -- multiply by ``gamma`` at each milestone (the paper family halves the rate at
  epochs 100/150/200/230/260/280 of 300: these fractions of the run are the default);
* ``cosine`` -- cosine decay from the base rate to ``min_lr``;
* ``constant``.
All with an optional linear warm-up over the first ``warmup`` steps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

SCHEDULES = ("multistep", "cosine", "constant")
#: The paper family's milestones (epochs 100/150/200/230/260/280 of 300) as fractions of the run.
PAPER_MILESTONES = (100 / 300, 150 / 300, 200 / 300, 230 / 300, 260 / 300, 280 / 300)


@dataclass
class LRSchedule:
    base_lr: float
    total_steps: int
    kind: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: list(PAPER_MILESTONES))
    gamma: float = 0.5
    min_lr: float = 1e-6
    warmup: int = 0

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.kind!r}")
        if self.total_steps < 1 or self.base_lr <= 0:
            raise ValueError("total steps and learning rate must be positive")
        self.milestones = [float(m) for m in self.milestones]

    def milestone_steps(self) -> list[int]:
        """Milestones in steps: values below 1 are fractions of the run, others step numbers."""
        return sorted(int(round(m * self.total_steps)) if m < 1 else int(m) for m in self.milestones)

    def lr_at(self, step: int) -> float:
        """Learning rate used for the optimiser step that follows ``step`` completed steps."""
        if self.warmup and step < self.warmup:
            return self.base_lr * (step + 1) / self.warmup
        if self.kind == "constant":
            return self.base_lr
        if self.kind == "multistep":
            passed = sum(1 for m in self.milestone_steps() if step >= m)
            return self.base_lr * self.gamma ** passed
        span = max(1, self.total_steps - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return self.min_lr + 0.5 * (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        lr = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)
