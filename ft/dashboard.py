"""The W&B dashboard for sqlft runs, kept in the repo and created in a project with one command.

    python -m ft.dashboard --project P [--entity E] [--name "sqlft"] [--group-runs] [--tiers a,b,c] [--report]
    python -m ft.dashboard --project P --print     # the definition as JSON, no network

Builds a W&B workspace view (or, with --report, a report) with loss curves, learning rate, throughput and memory,
execution accuracy overall and per difficulty tier, base vs fine-tuned, and the predictions tables (filter
`correct == false` to see the failures). Every metric it names is one training logs (docs/metrics.md;
tests/test_dashboard.py checks them against a real run). Uses the `wandb-workspaces` package.
"""
from __future__ import annotations

import json
import sys

from ft.cli import Alias, Command, run
from ft.metrics import RATES, TABLES
from ft.metrics import TIERS as DEFAULT_TIERS  # the bundled dataset's; other datasets: --tiers

FAILURES_HELP = """**Predictions.** `eval/predictions`: the fixed evaluation sample at each periodic evaluation
(`eval.every`); `final/predictions`: the whole held-out split at the end, fine-tuned model. Columns: question, gold,
predicted, correct, error, tier, hallucinated. To see the failures, filter the table with `row["correct"] == false`
(or sort by `error`); group by `tier` to see where the model fails."""


def panels(tiers=DEFAULT_TIERS):
    """(section name, open?, panels) with wandb_workspaces.reports.v2 panels; shared by workspace and report."""
    import wandb_workspaces.reports.v2 as wr

    def line(title, y, **kw):
        return wr.LinePlot(title=title, x="Step", y=list(y), **kw)

    def bar(title, metrics):
        return wr.BarPlot(title=title, metrics=list(metrics), orientation="v")

    return [
        ("Overview", True, [
            wr.ScalarChart(title="EX fine-tuned (held-out)", metric="final/finetuned/ex"),
            wr.ScalarChart(title="EX base (held-out)", metric="final/base/ex"),
            line("Execution accuracy (periodic sample)", ["eval/ex"]),
            line("Loss", ["train/loss", "eval/loss"]),
            bar("Base vs fine-tuned: execution accuracy", ["final/base/ex", "final/finetuned/ex"]),
            line("Throughput (tokens/s, all processes)", ["perf/tokens_per_s"]),
        ]),
        ("Loss and optimization", False, [
            line("Training and held-out loss", ["train/loss", "eval/loss"]),
            line("Learning rate", ["train/lr"]),
            line("Gradient norm (before clipping)", ["train/grad_norm"]),
            line("Epoch", ["train/epoch"]),
            line("Examples seen", ["train/examples_seen"]),
            line("Tokens seen", ["train/tokens_seen", "train/target_tokens_seen"]),
        ]),
        ("Execution accuracy", False, [
            line("Execution metrics (periodic sample)", [f"eval/{k}" for k in RATES if k != "hallucination"]),
            line("Hallucinated tables/columns (share of answers)", ["eval/hallucination"]),
            line("EX per tier (periodic sample)", [], metric_regex=r"eval/tier/.*/ex$"),
            line("Time per question (generation share of its batch + execution)",
                 ["eval/time_per_question_p50_s", "eval/time_per_question_p95_s"]),
        ]),
        ("Base vs fine-tuned (held-out split)", False, [
            bar("Execution metrics: base vs fine-tuned",
                [f"final/{m}/{k}" for k in RATES for m in ("base", "finetuned")]),
            bar("EX per tier: fine-tuned", [f"final/finetuned/tier/{t}/ex" for t in tiers]),
            bar("EX per tier: base", [f"final/base/tier/{t}/ex" for t in tiers]),
        ]),
        ("Throughput and memory", False, [
            line("Tokens/s (all processes, padding excluded)", ["perf/tokens_per_s", "perf/target_tokens_per_s"]),
            line("Samples/s", ["perf/samples_per_s"]),
            line("MFU (CUDA: 6·N·tokens/s over the GPUs' BF16 peak)", ["perf/mfu"]),
            line("Memory (MiB)", ["perf/peak_memory_mb", "sys/gpu_reserved_mb", "sys/rss_mb"]),
            line("Padding fraction", ["perf/padding_fraction"]),
        ]),
        ("Predictions", True, [
            wr.MarkdownPanel(markdown=FAILURES_HELP, layout=wr.Layout(w=24, h=4)),
            *[wr.WeavePanelSummaryTable(table_name=t, layout=wr.Layout(w=24, h=14)) for t in TABLES],
        ]),
    ]


def workspace(entity: str, project: str, name: str = "sqlft", tiers=DEFAULT_TIERS, group_runs: bool = False):
    import wandb_workspaces.workspaces as ws

    wide = ws.SectionLayoutSettings(columns=1, rows=2)  # tables need the whole width
    sections = [ws.Section(name=title, panels=ps, is_open=is_open,
                           **({"layout_settings": wide} if title == "Predictions" else {}))
                for title, is_open, ps in panels(tiers)]
    runset = ws.RunsetSettings(groupby=[ws.Metric("Group")]) if group_runs else ws.RunsetSettings()
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections,
                        settings=ws.WorkspaceSettings(x_axis="Step", max_runs=20), runset_settings=runset)


def report(entity: str, project: str, title: str = "sqlft fine-tuning", tiers=DEFAULT_TIERS):
    import wandb_workspaces.reports.v2 as wr

    blocks = [wr.P("Text-to-SQL fine-tunes with sqlft: loss, throughput, execution accuracy per tier, predictions. "
                   "Metric names: docs/metrics.md in the sqlft repository.")]
    for name, _, ps in panels(tiers):
        blocks += [wr.H2(name), wr.PanelGrid(runsets=[wr.Runset(entity=entity, project=project)], panels=ps)]
    return wr.Report(entity=entity, project=project, title=title, blocks=blocks)


def referenced_metrics(tiers=DEFAULT_TIERS) -> tuple[set[str], set[str]]:
    """(metric names, regular expressions) the dashboard plots; tables not included (see TABLES)."""
    names, regexes = set(), set()
    for _, _, ps in panels(tiers):
        for p in ps:
            for attr in ("y", "metrics"):
                names |= {m for m in (getattr(p, attr, None) or []) if isinstance(m, str)}
            if isinstance(getattr(p, "metric", None), str) and p.metric:
                names.add(p.metric)
            if getattr(p, "metric_regex", None):
                regexes.add(p.metric_regex)
    return names, regexes


def spec(view) -> dict:
    """The definition as W&B would store it, built locally with nothing sent.

    A report's run sets need the project's id from the server, so for a report: its title and panels only.
    """
    def dump(model):
        return model.model_dump(by_alias=True, exclude_none=True, mode="json")

    if hasattr(view, "sections"):
        return dump(view._to_model())
    out = {"entity": view.entity, "project": view.project, "title": view.title, "blocks": []}
    for b in view.blocks:
        panels_ = getattr(b, "panels", None)
        out["blocks"].append({"panels": [dump(p._to_model()) for p in panels_]} if panels_ is not None
                             else dump(b._to_model()))
    return out


def _own(p) -> None:
    p.add_argument("--name", default="sqlft", help="name of the saved view (or report title)")
    p.add_argument("--tiers", help="comma-separated difficulty tiers for the per-tier bars "
                                   f"(default: the bundled dataset's: {','.join(DEFAULT_TIERS)})")
    p.add_argument("--group-runs", action="store_true", help="group runs by their W&B group (tracking.group)")
    p.add_argument("--report", action="store_true", help="create a W&B report instead of a workspace view")
    p.add_argument("--print", action="store_true", help="print the definition as JSON and send nothing")


COMMAND = Command(
    name="dashboard", description=__doc__, add_arguments=_own,
    aliases=[Alias("--project", "tracking.project", "W&B project the runs log to"),
             Alias("--entity", "tracking.entity", "W&B entity (user or team) [your default entity]")],
)


def dashboard_command(cfg, args) -> int:
    try:
        import wandb_workspaces  # noqa: F401
    except ImportError:
        print("error: the dashboard needs the wandb-workspaces package: pip install wandb-workspaces", file=sys.stderr)
        return 2
    tiers = tuple(t.strip() for t in args.tiers.split(",") if t.strip()) if args.tiers else DEFAULT_TIERS
    entity = cfg.tracking.entity
    if entity is None and args.print:
        entity = "ENTITY"
    if entity is None:
        try:
            import wandb

            entity = wandb.Api().default_entity
        except Exception as e:  # no login, no network: say what to do
            print(f"error: no --entity given and W&B's default entity is unknown ({e}); log in with "
                  "`wandb login` or pass --entity", file=sys.stderr)
            return 2
    view = (report(entity, cfg.tracking.project, args.name, tiers) if args.report
            else workspace(entity, cfg.tracking.project, args.name, tiers, args.group_runs))
    if args.print:
        print(json.dumps(spec(view), indent=2))
        return 0
    try:
        view.save()
    except Exception as e:
        print(f"error: could not save the {'report' if args.report else 'workspace'} to W&B: {e}", file=sys.stderr)
        return 1
    print(f"{'report' if args.report else 'workspace'}: {view.url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(COMMAND, dashboard_command, argv)


if __name__ == "__main__":
    sys.exit(main())
