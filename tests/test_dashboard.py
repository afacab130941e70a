"""The W&B side: the dashboard definition (built offline) against what a real tiny run logs, the predictions tables,
adapter artifacts, resumed runs' steps, sys/* and perf/mfu."""
import json
import re
import struct

import pytest
from test_report import TIERS, real_run

from ft import metrics, system, tracking

TABLE_COLUMNS = ["question", "gold", "predicted", "correct", "error", "tier", "hallucinated"]


# ------------------------------------------------------------------------------------------------
# reading an offline W&B run folder (run-<id>.wandb: W&B's LevelDB-style log of protobuf records)


def wandb_records(run_folder):
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_folder.glob("run-*.wandb")
    data, block = path.read_bytes(), 32768
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            pos += left
            continue
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk  # full / first, middle / last
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(pending)
            yield rec


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def wandb_logged(run_folder) -> dict:
    """History rows ({key: value} with _step), summary keys, config keys, artifacts of an offline run."""
    out = {"history": [], "summary": set(), "config": {}, "artifacts": []}
    for rec in wandb_records(run_folder):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "summary":
            out["summary"] |= {_key(i) for i in rec.summary.update}
        elif kind == "config":
            out["config"] |= {_key(i): json.loads(i.value_json) for i in rec.config.update}
        elif kind == "artifact":
            out["artifacts"].append(rec.artifact)
    return out


@pytest.fixture
def real(tmp_path_factory, tiny_model, shop_rows_file):
    # rows with a database: execution metrics are only reported for questions whose gold query ran
    return real_run(tmp_path_factory, tiny_model, shop_rows_file)


def local_names(run_dir) -> set[str]:
    names = set()
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        names |= set(json.loads(line)) - {"step", "time"}
    return names


# ------------------------------------------------------------------------------------------------
# the dashboard definition


def test_dashboard_builds_offline():
    pytest.importorskip("wandb_workspaces")
    from ft import dashboard

    view = dashboard.workspace("someone", "sqlft", tiers=TIERS, group_runs=True)
    spec = dashboard.spec(view)
    sections = spec["spec"]["section"]["panelBankConfig"]["sections"]
    assert [s["name"] for s in sections] == ["Overview", "Loss and optimization", "Execution accuracy",
                                             "Base vs fine-tuned (held-out split)", "Throughput and memory",
                                             "Predictions"]
    text = json.dumps(spec)
    for table in metrics.TABLES:
        assert f'\\"{table}\\"' in text or f'"{table}"' in text  # the summary-table panels query them by name
    assert '"eval/tier/.*/ex$"' in text and "train/lr" in text and "perf/tokens_per_s" in text
    report = dashboard.spec(dashboard.report("someone", "sqlft", tiers=TIERS))
    assert report["title"] and sum("panels" in b for b in report["blocks"]) == len(sections)
    assert dashboard.main(["--project", "p", "--print", "--tiers", "a,b"]) == 0


def test_default_tiers_are_the_bundled_datasets():
    try:
        from ft.data.synthetic import TIERS as bundled
    except ImportError:
        pytest.skip("bundled dataset not present")
    from ft.metrics import TIERS as DEFAULT_TIERS

    assert tuple(DEFAULT_TIERS) == tuple(bundled)


def test_dashboard_metrics_are_logged_by_a_real_run(real):
    pytest.importorskip("wandb_workspaces")
    from ft import dashboard

    names, regexes = dashboard.referenced_metrics(tiers=TIERS)
    expected = names - metrics.CUDA_ONLY
    local = local_names(real["run"])
    assert expected <= local, sorted(expected - local)
    first = wandb_logged(real["wandb"][0])
    in_wandb = {k for row in first["history"] for k in row} | first["summary"]
    assert expected <= in_wandb, sorted(expected - in_wandb)
    for rx in regexes:
        assert any(re.fullmatch(rx, n) for n in local), rx
    # every name a run logs or the dashboard plots is in docs/metrics.md (tiers and final/* generically)
    from conftest import REPO

    doc = (REPO / "docs" / "metrics.md").read_text()
    assert "`eval/tier/<tier>/{ex,ex_set,em,valid,hallucination}`" in doc and "`final/{base,finetuned}/*`" in doc
    for n in local | names | {"sys/gpu_name", "sys/gpu_count", "sys/gpu_memory_gb"}:
        if not n.startswith(("final/", "eval/tier/")):
            assert f"`{n}`" in doc, f"{n} is not documented in docs/metrics.md"


def test_predictions_tables_and_config_in_wandb(real):
    first = real["wandb"][0]
    for name in ("eval/predictions", "final/predictions"):
        files = sorted((first / "files" / "media" / "table").glob(f"{name}_*.table.json"))
        assert files, name
        table = json.loads(files[-1].read_text())
        assert table["columns"] == TABLE_COLUMNS
        assert table["data"] and all(len(r) == len(TABLE_COLUMNS) for r in table["data"])
    # the same rows locally
    local = sorted((real["run"] / "tables" / "eval" / "predictions").glob("step-*.jsonl"))
    assert local and list(json.loads(local[0].read_text().splitlines()[0])) == TABLE_COLUMNS
    logged = wandb_logged(first)
    cfg = logged["config"]
    assert cfg["lora"]["r"] == real["config"]["lora"]["r"] and "git_commit" in cfg and "git_dirty" in cfg
    assert cfg["sys"]["world_size"] == 1 and cfg["sys"]["cpu_count"] >= 1
    assert {"sys/cpu_count", "sys/world_size"} <= logged["summary"]


def test_resumed_run_never_sends_a_step_wandb_already_has(real):
    first, second = (wandb_logged(f) for f in real["wandb"])
    steps1 = [r["_step"] for r in first["history"]]
    steps2 = [r["_step"] for r in second["history"]]
    assert steps1 == sorted(steps1) and max(steps1) == 16
    assert steps2 and min(steps2) > 16 and steps2 == sorted(steps2) and max(steps2) == 20
    # locally the replayed steps are there twice
    steps = [json.loads(l)["step"] for l in (real["run"] / "metrics.jsonl").read_text().splitlines()]
    assert steps.count(12) >= 2


def test_adapters_logged_as_reference_artifacts(real):
    arts = [a for f in real["wandb"] for a in wandb_logged(f)["artifacts"] if a.type == "model"]
    run_id = json.loads((real["run"] / "run.json").read_text())["run_id"]
    assert {a.name for a in arts} == {f"adapter-{run_id}"}
    aliases = [set(a.aliases) for a in arts]
    assert {"step-4"} <= aliases[0] and any("final" in al for al in aliases)
    for a in arts:
        refs = [e.ref for e in a.manifest.contents]
        assert refs and all(r.startswith("file://") for r in refs)  # by reference: nothing uploaded
        assert any(r.endswith("/adapter/adapter_model.safetensors") for r in refs)
        assert not any(r.endswith("optimizer.pt") for r in refs)
        meta = json.loads(a.metadata)
        assert meta["path"] in refs[0] and meta["lora_r"] == real["config"]["lora"]["r"]
        assert "train/loss" in meta["metrics"]
    final = [a for a in arts if "final" in a.aliases][-1]  # the resumed attempt's (the first one finished too)
    meta = json.loads(final.metadata)
    assert meta["step"] == 20 and "final/finetuned/ex" in meta["metrics"] and meta["path"].endswith("/run/adapter")


# ------------------------------------------------------------------------------------------------
# sys/* and perf/mfu


def test_peak_flops_table(monkeypatch):
    monkeypatch.delenv("SQLFT_PEAK_TFLOPS", raising=False)
    cases = {"NVIDIA H100 80GB HBM3": 989, "NVIDIA H100 PCIe": 756, "NVIDIA H100 NVL": 835, "NVIDIA H200": 989,
             "NVIDIA GH200 480GB": 989, "NVIDIA A100-SXM4-80GB": 312, "NVIDIA A100 80GB PCIe": 312,
             "NVIDIA L40S": 362, "NVIDIA L40": 181, "NVIDIA L4": 121, "NVIDIA A10": 125}
    for name, tflops in cases.items():
        assert tracking.peak_flops(name) == tflops * 1e12, name
    assert tracking.peak_flops("NVIDIA GeForce GTX 1080") is None and tracking.peak_flops(None) is None
    monkeypatch.setenv("SQLFT_PEAK_TFLOPS", "100")
    assert tracking.peak_flops("anything") == 100e12


def test_mfu_and_model_params():
    import torch

    assert tracking.mfu(1_000_000_000, 10_000, 2, 989e12) == pytest.approx(6e9 * 1e4 / (2 * 989e12))
    assert tracking.mfu(10, 10, 1, None) is None

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 8)
            self.proj = torch.nn.Linear(8, 8, bias=False)
            packed = torch.nn.Parameter(torch.zeros(32, 1), requires_grad=False)  # a 4-bit 8x8 weight, packed
            packed.quant_state = type("QS", (), {"shape": torch.Size([8, 8])})()
            self.q = packed

        def get_input_embeddings(self):
            return self.emb

    assert tracking.model_params(Tiny()) == 64 + 64  # embedding table left out, the 4-bit weight unpacked
    # Under ZeRO-3 a parameter also carries DeepSpeed's ds_numel, the count of its (packed) storage: the 4-bit
    # weight's real shape wins over it; a plain sharded weight counts ds_numel (its whole size, not its shard).
    zero3 = Tiny()
    zero3.q.ds_numel = 32
    zero3.proj.weight.ds_numel = 64
    assert tracking.model_params(zero3) == 64 + 64
    del zero3.q.quant_state  # negative control: without the real shape the packed count (32) is all there is
    assert tracking.model_params(zero3) == 64 + 32


def test_sys_info_and_rss():
    import torch

    info = system.system_info(torch.device("cpu"), 1)
    assert info["sys/world_size"] == 1 and info["sys/nodes"] == 1 and info["sys/cpu_count"] >= 1
    assert "sys/gpu_name" not in info
    assert 1 < system.process_rss_mb() < 1e6
