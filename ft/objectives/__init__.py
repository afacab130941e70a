"""Training objectives: what ft/train.py's one loop optimises, one module each, behind one interface
(ft/objectives/base.py: Objective, StepData, StepResult).

    sft    ft/objectives/sft.py    cross-entropy on the answer tokens
    grpo   ft/objectives/grpo.py   GRPO with an execution reward (its machinery: ft/grpo.py)

A new objective (DPO on executed pairs, a reward model, distillation from a bigger model's SQL) is one module with a
class that has Objective's four methods, one entry in OBJECTIVES, and its name in ft.config's ObjectiveName.
"""
from __future__ import annotations

from ft.config import Config
from ft.objectives.base import Objective, StepData, StepResult
from ft.objectives.grpo import GRPO
from ft.objectives.sft import SFT

__all__ = ["OBJECTIVES", "Objective", "StepData", "StepResult", "build"]

OBJECTIVES: dict[str, type] = {"sft": SFT, "grpo": GRPO}  # keyed by train.objective (ft.config.ObjectiveName)


def build(cfg: Config) -> Objective:
    return OBJECTIVES[cfg.train.objective](cfg)
