"""Training to a time budget (ft/budget.py): the planner on a fake clock, the schedule it builds, and a budgeted run
whose plan is fixed after calibration and kept by a resumed run."""
import json
import shutil

import pytest
import torch
from test_train import adapter_tensors, run, write_config

from ft import budget as bud
from ft import checkpoint as ckpt


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def calibrated(durations: list[float], weights: list[float], warmup: int = 10) -> bud.Calibration:
    clock = FakeClock()
    cal = bud.Calibration(0, warmup, clock)
    for step, (d, w) in enumerate(zip([99.0, *durations], [1.0, *weights]), start=1):  # step 1: one-off costs
        cal.step_started()
        clock.now += d
        cal.step_done(step, w)
    return cal


def test_calibration_times_steps_within_the_warmup():
    cal = calibrated([2.0, 3.0, 4.0], [100, 100, 200], warmup=4)
    assert (cal.first, cal.end) == (1, 4) and cal.durations == [2.0, 3.0, 4.0]  # step 1 (99 s) left out
    assert bud.Calibration(0, 3).end == 3  # 2 timed steps, the warmup's last
    assert bud.Calibration(0, 0).end == 3  # no warmup: at least 2 timed all the same
    assert bud.Calibration(0, 100).end == 9  # at most 8
    assert (bud.Calibration(40, 10).first, bud.Calibration(40, 10).end) == (41, 43)  # a resumed run
    fresh = bud.Calibration(0, 4)
    assert [s for s in range(1, 6) if fresh.costs_due(s)] == [1]  # the costs: after the left-out step only
    fresh.costs = bud.Costs()
    assert not fresh.costs_due(1)  # once


def brute_force(plan_args: dict, n: int) -> float:
    """The expected wall time of a run of n steps, counted independently of plan_steps."""
    a, r = plan_args, plan_args["recurring"]
    t = a["elapsed_s"]
    for step in range(a["at_step"] + 1, n + 1):
        t += a["rate"] * a["weight"](step)
    for step in range(a["at_step"] + 1, n):  # after each step but the last
        if r.checkpoint_every and step % r.checkpoint_every == 0:
            t += a["checkpoint_s"]
        if r.loss_every and step % r.loss_every == 0:
            t += r.loss_batches * a["loss_batch_s"]
    # the fine-tuned half of the evaluation, from the base half measured
    return t + a["checkpoint_s"] + r.final_loss_batches * a["loss_batch_s"] + a["eval_s"] * 1.2


@pytest.mark.parametrize("every,loss_every", [(0, 0), (5, 0), (3, 4)])
def test_plan_is_the_most_steps_that_fit(every, loss_every):
    cal = calibrated([2.0, 2.2, 1.8], [100, 110, 90])  # 0.02 s a token
    weight = lambda step: 100 + (step % 3) * 10  # noqa: E731 (tokens of each step, known from the batch plan)
    recurring = bud.Recurring(checkpoint_every=every, loss_every=loss_every, loss_batches=2, final_loss_batches=6)
    args = dict(elapsed_s=40.0, at_step=4, rate=0.02, weight=weight, recurring=recurring, checkpoint_s=1.5,
                loss_batch_s=0.5, eval_s=120.0)
    plan = bud.plan_steps(10, 40.0, 4, cal, weight, recurring, loss_batch_s=0.5, eval_s=120.0, checkpoint_s=1.5)
    assert plan.s_per_weight == pytest.approx(0.02) and plan.step_s == pytest.approx(2.0)
    n = plan.total_steps
    assert brute_force(args, n) <= 600 < brute_force(args, n + 1)  # fits, one more would not
    assert plan.expected_s == pytest.approx(brute_force(args, n))
    assert 130 < n - 4 <= 187  # after step 4: (600 - 40 - 144 - 4.5) / 2.2 s at most, fewer with recurring costs
    assert plan.line().startswith(f"budget 10 min: ~2.0 s a step measured -> {n} steps; evaluation ~2.4 min")


def test_plan_cap_and_a_spent_budget():
    cal = calibrated([1.0, 1.0], [1, 1])
    one = lambda step: 1.0  # noqa: E731
    capped = bud.plan_steps(10, 0.0, 3, cal, one, bud.Recurring(), cap=50)
    assert (capped.total_steps, capped.capped) == (50, True) and "(train.max_steps)" in capped.line()
    spent = bud.plan_steps(1, 70.0, 3, cal, one, bud.Recurring())  # start-up alone took more than the budget
    assert spent.total_steps == 3
    with pytest.raises(ValueError):
        bud.plan_steps(1, 0.0, 3, bud.Calibration(0, 3), one, bud.Recurring())


def test_a_resumed_run_keeps_the_plan_made_for_its_budget():
    plan = bud.plan_steps(10, 40.0, 4, calibrated([2.0, 2.0], [1, 1]), lambda s: 1.0, bud.Recurring(), cap=None)
    saved = json.loads(json.dumps(plan.to_dict()))  # as state.json holds it
    assert bud.kept_plan(saved, 10, None) == plan
    assert bud.kept_plan(saved, 12, None) is None  # another budget: planned again
    assert bud.kept_plan(saved, 10, 100) is None  # another cap
    assert bud.kept_plan(None, 10, None) is None


def _lrs(scheduler, optimizer, steps: int) -> list[float]:
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_schedule_built_after_calibration_equals_one_built_from_the_start(kind):
    """Planning within the warmup: the rebuilt schedule gives every step the rate of a schedule built for the
    planned total from the start; planning past the warmup would not (negative control)."""
    from transformers import get_scheduler

    def fresh():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
        return opt

    def build(opt, total):
        return get_scheduler(kind, opt, num_warmup_steps=5, num_training_steps=total)

    total = 40
    opt = fresh()
    reference = _lrs(build(opt, total), opt, total)

    def budgeted(plan_at: int) -> list[float]:
        opt = fresh()
        sched = build(opt, bud.PROVISIONAL_STEPS)
        lrs = _lrs(sched, opt, plan_at)  # the calibration steps
        sched = bud.rebuild_scheduler(sched, opt, lambda: build(opt, total))
        return lrs + _lrs(sched, opt, total - plan_at)

    assert budgeted(5) == pytest.approx(reference, rel=1e-12, abs=0)  # planned at the warmup's last step
    assert budgeted(3) == pytest.approx(reference, rel=1e-12, abs=0)
    assert budgeted(8) != pytest.approx(reference, rel=1e-6, abs=0)  # past the warmup: the peak held meanwhile
    opt = fresh()  # and a schedule simply replaced (the optimizer's rate not kept) is wrong too
    sched = build(opt, bud.PROVISIONAL_STEPS)
    lrs = _lrs(sched, opt, 5)
    assert lrs + _lrs(build(opt, total), opt, total - 5) != pytest.approx(reference, rel=1e-6, abs=0)


# ------------------------------------------------------------------------------------------------
# end to end on the tiny model: the plan is fixed after calibration, recorded, and kept on resume


def test_budgeted_run_schedule_is_fixed_after_calibration_and_resume_keeps_it(tmp_path, tiny_model, rows_file):
    common = dict(train={"max_minutes": 30, "max_steps": 12, "warmup_steps": 4, "per_device_batch_size": 2,
                         "log_every": 1}, checkpoint={"every": 0, "keep_last": 3}, eval={"at_end": False})
    budget_dir, ref_dir = tmp_path / "budget", tmp_path / "ref"
    budget_dir.mkdir(), ref_dir.mkdir()
    # the generous budget plans past the cap: 12 steps, a total known in advance, so the runs can be compared
    proc = run(write_config(budget_dir, tiny_model, rows_file, **common))
    assert "budget 30 min: ~" in proc.stdout and "-> 12 steps (train.max_steps)" in proc.stdout
    ckpts = budget_dir / "run" / "checkpoints"
    state = json.loads((ckpts / "step-000004" / "state.json").read_text())  # the plan, recorded when it was made
    assert state["budget"]["total_steps"] == 12 and state["budget"]["planned_at_step"] == 4
    assert "max_steps: 12" in (ckpts / "step-000004" / "config.yaml").read_text()

    # the same steps, schedule built for 12 from the start, no budget
    ref = run(write_config(ref_dir, tiny_model, rows_file, **common), "--train.max_minutes", "null")
    assert "budget 30 min" not in ref.stdout + ref.stderr
    a, r = adapter_tensors(budget_dir / "run" / "adapter"), adapter_tensors(ref_dir / "run" / "adapter")
    assert max((a[k] - r[k]).abs().max().item() for k in a) < 1e-6

    def resumed_from_step_4(name: str, plan: dict | None):
        folder = tmp_path / name
        shutil.copytree(budget_dir / "run", folder / "run")
        shutil.rmtree(folder / "run" / "checkpoints" / "step-000012")
        shutil.rmtree(folder / "run" / "adapter")
        state_file = folder / "run" / "checkpoints" / "step-000004" / "state.json"
        state_file.write_text(json.dumps(json.loads(state_file.read_text()) | {"budget": plan}))
        ckpt.write_manifest(state_file.parent)  # the changed checkpoint verifies: the plan is what is tested
        proc = run(write_config(folder, tiny_model, rows_file, **common))
        return proc, adapter_tensors(folder / "run" / "adapter")

    proc, kept = resumed_from_step_4("kept", state["budget"])  # e.g. preempted after the plan
    assert "(the plan of step-000004, kept)" in proc.stderr + proc.stdout
    assert max((a[k] - kept[k]).abs().max().item() for k in a) < 1e-6  # ends where the uninterrupted run ends
    # negative control: a resumed run that doesn't find the plan calibrates and plans again (the peak rate held
    # meanwhile): it also stops at the cap, with another adapter
    proc, lost = resumed_from_step_4("lost", None)
    assert "timing steps 6-7" in proc.stderr + proc.stdout and "-> 12 steps" in proc.stdout
    assert max((a[k] - lost[k]).abs().max().item() for k in a) > 1e-4


def test_costs_are_measured_before_the_timed_steps(tmp_path, tiny_model, rows_file):
    """The base model's evaluation (and a held-out loss batch, a checkpoint) run after the left-out first step and
    before the timed ones, so steps are timed as the rest of the run trains, after a generation pass."""
    from helpers import metrics

    cfg = write_config(tmp_path, tiny_model, rows_file,
                       train={"max_minutes": 30, "max_steps": 8, "warmup_steps": 4, "log_every": 1},
                       eval={"at_end": True, "max_new_tokens": 8, "batch_size": 4, "loss_every": 2, "loss_batches": 1})
    proc = run(cfg)
    assert "-> 8 steps (train.max_steps)" in proc.stdout
    order = [(r["step"], "base" if "final/base/n" in r else "loss" if "eval/loss" in r else "step")
             for r in metrics(tmp_path / "run") if {"final/base/n", "eval/loss", "train/loss"} & set(r)]
    # right after step 1 (left out of the timing), before the first timed step: a loss batch, the base half
    assert order[:4] == [(1, "step"), (1, "loss"), (1, "base"), (2, "step")]
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["budget"]["planned_at_step"] == 4 and state["budget"]["eval_s"] > 0
    finals = [r for r in metrics(tmp_path / "run") if "final/finetuned/n" in r]
    assert [r["step"] for r in finals] == [8]  # the fine-tuned half at the end, as before


# ------------------------------------------------------------------------------------------------
# sqlft submit: the budget from the job's time limit


def test_budget_from_the_slurm_time_limit():
    from launch.plan import SubmitError, budget_from_time_limit

    assert budget_from_time_limit(60, 90)[0] == 55.5  # 60 - 1.5 (USR2@90) - 3 (5 %)
    assert budget_from_time_limit(24 * 60, 300)[0] == 1440 - 5 - 72
    assert budget_from_time_limit(10, 90)[0] == 6.5  # at least 2 minutes of margin
    with pytest.raises(SubmitError, match="longer --time"):
        budget_from_time_limit(3, 90)


def test_submit_time_budget_auto_reaches_every_node(monkeypatch, capsys, tmp_path):
    from test_launch_plan import run_main

    common = ["--dry-run", "--output-root", str(tmp_path), "--allow-local-output", "--run-name", "b", "--nodes", "2"]
    rc, out, err = run_main(monkeypatch, capsys, [*common, "--time", "50", "--signal", "USR1@120",
                                                  "--time-budget", "auto"])
    assert rc == 0, err
    nodes = [line for line in out.splitlines() if line.startswith("node ")]
    assert len(nodes) == 2 and all("--train.max_minutes 45.5" in n for n in nodes)  # 50 - 2 - 2.5
    assert "time budget: train.max_minutes 45.5" in out + err
    rc, out, err = run_main(monkeypatch, capsys, [*common, "--time", "60", "--time-budget", "auto",
                                                  "--train.max_minutes", "20"])
    assert rc == 2 and "same setting" in err
