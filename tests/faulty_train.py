"""ft/train.py with one fault put in on purpose: the negative controls of the "2 processes = 1 process" tests run it
to show those comparisons fail when the distributed arithmetic is wrong.

    accelerate launch ... tests/faulty_train.py FAULT --config run.yaml

FAULT: loss_scale (every micro-batch's loss scaled by 1/2, as a normalisation left in twice would) or same_rows (every
rank trains on rank 0's rows, as a sampler that ignores the rank would).
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ft.objectives.base as objective_base  # noqa: E402
import ft.train as train  # noqa: E402
from ft.data.batching import BatchPlan  # noqa: E402

FAULTS = ("loss_scale", "same_rows")


def put_in(fault: str) -> None:
    if fault == "loss_scale":
        right = objective_base.loss_scale  # where the objectives' backward window reads it
        objective_base.loss_scale = lambda *a, **k: 0.5 * right(*a, **k)
    elif fault == "same_rows":
        right = BatchPlan.step_batches
        BatchPlan.step_batches = lambda self, epoch, step, rank: right(self, epoch, step, 0)
    else:
        raise SystemExit(f"unknown fault {fault!r}; one of {', '.join(FAULTS)}")


if __name__ == "__main__":
    put_in(sys.argv.pop(1))
    sys.exit(train.main())
