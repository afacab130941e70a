"""bench/gpu_check.py: the dry run CI can run (every check listed with its SKIP reason, everything it would use
built), the pure helpers behind its verdicts (with negative controls), and, slow, its equivalence checks on CPU."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import gpu_check as gc  # noqa: E402

ENV = os.environ | {"PYTHON": sys.executable, "SQLFT_NO_WHEELS": "1", "WANDB_MODE": "disabled"}


def run_script(tmp_path, *args, timeout=300):
    out = tmp_path / "gpu_check.json"
    t = time.perf_counter()
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), *args, "--out", str(out),
                           "--workdir", str(tmp_path / "work"), "--keep-workdir"],
                          capture_output=True, text=True, env=ENV, cwd=REPO, timeout=timeout)
    return proc, out, time.perf_counter() - t


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gpu-check-dry")
    proc, out, seconds = run_script(tmp, "--dry-run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), out, tmp / "work", seconds


def test_dry_run_lists_every_check_with_its_skip_reason(dry_run):
    proc, doc, out, _, seconds = dry_run
    names = [c.name for c in gc.CHECKS]
    assert len(names) == len(set(names)) == 14
    assert {c["name"] for c in doc["checks"]} == set(names)
    assert {c.part for c in gc.CHECKS} == set(range(1, 8))  # all seven parts of the issue
    for c in doc["checks"]:
        assert c["status"] == "SKIP" and c["reason"], c
        if not torch.cuda.is_available():
            assert c["reason"].startswith("no CUDA device"), c
        assert f"[SKIP] part {c['part']} {c['name']}" in proc.stdout
    assert doc["mode"] == "dry-run" and doc["summary"] == {"PASS": 0, "FAIL": 0, "SKIP": len(names)}
    flash = next(c for c in doc["checks"] if c["name"] == "packing_flash_attention_2")
    if doc["versions"]["flash-attn"] is None:
        assert "flash-attn is not installed" in flash["reason"]  # what a GPU without it would say, said up front
    table = out.with_suffix(".md").read_text()
    assert all(f"`{n}`" in table for n in names) and "| part | check | status |" in proc.stdout
    assert {"mfu", "tokens_per_s", "equivalence_tolerance", "resume_tolerance"} <= set(doc["formulas"])
    assert seconds < 90, seconds  # ~10 s here; "well under a minute" with margin for a loaded CI machine


def test_checks_run_in_the_order_they_are_written_and_import_nothing_from_tests():
    source = (REPO / "bench" / "gpu_check.py").read_text()
    written = [line.split('"')[1] for line in source.splitlines() if line.startswith("@check(")]
    assert [c.name for c in gc.CHECKS] == written
    assert "from tiny " not in source and "import tiny" not in source and '"tests"' not in source


def test_the_context_is_declared():
    import argparse

    ctx = gc.Ctx(args=argparse.Namespace(), mode="cpu", work=Path("."), t0=0.0)
    with pytest.raises(AttributeError):
        ctx.something_new = 1  # every attribute is a declared field (slots)


def test_dry_run_builds_the_models_data_and_configs(dry_run):
    _, doc, _, work, _ = dry_run
    built = doc["setup"]["built"]
    for key in ("loop", "equivalence"):
        folder = work / built["small_models"][key].rsplit("/", 1)[-1]
        assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
        assert (folder / "tokenizer.json").is_file()
    assert (work / "rows.jsonl").read_text().count("\n") == 48
    d = built["data"]
    assert d["packing_examples"] >= 9 and d["prefix_examples"] == 15
    assert d["generation_questions"] == 12 and d["kv_reuse_questions"] == 32
    s = built["speed_data"]
    assert s["packed_micro_batches"] >= 12 and s["prefix_sharing"]["branches_per_group"] > 1
    assert s["tokenizer_vocab"] > 1000  # trained on the data, not bytes
    # the 7B shape: config only (no weights), and its parameter count is memory_estimate's 7B row
    big = work / "qwen2.5-7b-shape"
    assert (big / "config.json").is_file() and not list(big.glob("*.safetensors"))
    assert built["big_shape"]["params_match_estimate"] and 7.6e9 < built["big_shape"]["params_meta"] < 7.7e9
    configs = built["configs"]
    assert set(configs["loop"]) == {"loop_4bit", "loop_8bit", "loop_bf16", "resume_ref", "resume_part1",
                                    "resume_part2", "resume_lost_optimizer"}
    for name in configs["loop"]:  # each validates as ft.train will read it
        from ft.config import load_config

        cfg = load_config(work / f"{name}.yaml")
        assert cfg.train.log_every == 1 and not cfg.tracking.wandb
    if not torch.cuda.is_available():
        assert set(configs["resolve_only_on_cuda"]) <= {"loop_8bit"}


def test_dry_run_fails_loudly_on_a_broken_build(tmp_path):
    """Negative control: data the check can't build from (a broken Spider folder) makes the dry run FAIL, exit 1."""
    spider = tmp_path / "spider"
    spider.mkdir()
    (spider / "tables.json").write_text("{not json")
    (spider / "train_spider.json").write_text("[]")
    proc, out, _ = run_script(tmp_path, "--dry-run", "--spider", str(spider), timeout=120)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "[FAIL] setup" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["checks"][0]["name"] == "setup" and doc["checks"][0]["status"] == "FAIL"
    proc, _, _ = run_script(tmp_path, "--dry-run", "--only", "no_such_check", timeout=120)
    assert proc.returncode == 2 and "unknown check" in proc.stderr


# ------------------------------------------------------------------------------------------------
# the helpers behind the verdicts


def test_equivalence_verdict_and_its_negative_controls():
    eps = torch.finfo(torch.bfloat16).eps
    ok = gc.equivalence_verdict(err=0.012, noise=0.011, control=0.25, eps=eps)
    assert ok["ok"] and math.isclose(ok["tolerance"], 0.044)
    # the checked computation is off by more than 4x the noise: FAIL
    bad = gc.equivalence_verdict(err=0.05, noise=0.011, control=0.25, eps=eps)
    assert not bad["ok"] and "tolerance" in bad["why"]
    # the broken computation is within the tolerance: the check can't tell, FAIL
    blind = gc.equivalence_verdict(err=0.012, noise=0.011, control=0.03, eps=eps)
    assert not blind["ok"] and "can't tell" in blind["why"]
    # zero measured noise: the floor (eps / 16) applies, so a bitwise-equal run isn't held to 0
    floor = gc.equivalence_verdict(err=1e-4, noise=0.0, control=1.0, eps=eps)
    assert floor["ok"] and floor["tolerance"] == eps / 16
    assert not gc.equivalence_verdict(err=float("nan"), noise=0.01, control=1.0, eps=eps)["ok"]
    assert gc.equivalence_verdict(err=0.01, noise=0.01, control=None, eps=eps)["ok"]  # no control: gradients


def test_loss_fell():
    assert gc.loss_fell([6.0, 5.9, 5.8, 5.0, 4.5, 4.0, 3.5])
    assert not gc.loss_fell([6.0, 6.1, 5.9, 6.0, 5.95, 6.05])  # flat
    assert not gc.loss_fell([5.0, 5.0, 5.0, 6.0, 7.0, 8.0])  # rising
    assert not gc.loss_fell([6.0, 5.0, 4.0, float("nan"), 1.0, 1.0])
    assert not gc.loss_fell([6.0, 1.0])  # too few steps to tell
    assert gc.loss_fell([6.0, 6.0, 6.0, 5.9, 5.9, 5.9], factor=1.0)


def test_resume_tolerance_separates_a_lost_optimizer_state():
    lr = 5e-3
    tol = gc.resume_tolerance(lr, 6)
    assert math.isclose(tol, 3e-4)
    assert 0.0 <= tol  # a bitwise resume passes
    assert lr > 10 * tol  # Adam's first step after a lost state moves weights by ~lr: caught with room


def test_mfu_figures():
    f = gc.mfu_figures(7_000_000_000, 40_000, 4.0, 989e12)
    assert f["tokens_per_s"] == 10_000
    assert math.isclose(f["mfu"], 6 * 7e9 * 1e4 / 989e12)
    assert gc.mfu_figures(1, 1, 1.0, None)["mfu"] is None  # unknown peak: no MFU, not a made-up one
    with pytest.raises(ValueError):
        gc.mfu_figures(1, 1, 0.0, 989e12)


def test_memory_verdict():
    assert gc.memory_verdict(5.3e9, 5.55e9)["ok"]
    assert not gc.memory_verdict(6.7e9, 5.55e9)["ok"]  # 20% over
    assert not gc.memory_verdict(4.4e9, 5.55e9)["ok"]  # 20% under


def test_a_failing_check_is_recorded_and_sets_the_exit_status(tmp_path):
    import argparse

    ctx = gc.Ctx(args=argparse.Namespace(no_speed=False, budget_s=1e9), mode="cpu", work=tmp_path,
                 t0=time.perf_counter())

    def boom(ctx):
        raise RuntimeError("kaput")

    def skip(ctx):
        raise gc.Skip("not here")

    results = [gc.run_check(gc.Check(name, 3, "t", fn, cpu=True), ctx, {"a", "b", "c"})
               for name, fn in (("a", boom), ("b", skip), ("c", lambda ctx: {"x": 1}))]
    assert [r.status for r in results] == ["FAIL", "SKIP", "PASS"]
    assert "RuntimeError: kaput" in results[0].reason and "kaput" in results[0].figures["traceback"]
    assert results[1].reason == "not here"
    assert gc.exit_code(results) == 1 and gc.exit_code(results[1:]) == 0
    assert "| 3 | `a` | FAIL |" in gc.summary_table(results)


# ------------------------------------------------------------------------------------------------
# the equivalence checks' code, on CPU (float32 vs float64): what a GPU run does, minus the CUDA kernels


@pytest.mark.slow
def test_equivalence_checks_pass_on_cpu(tmp_path):
    proc, out, _ = run_script(tmp_path, "--device", "cpu", "--only",
                              "packing_sdpa,prefix_sharing_flex,generation_kv_reuse", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    status = {c["name"]: c for c in doc["checks"]}
    for name in ("packing_sdpa", "prefix_sharing_flex", "generation_kv_reuse"):
        assert status[name]["status"] == "PASS", status[name]
    p = status["prefix_sharing_flex"]["figures"]
    assert p["losses"]["control_error"] > 100 * p["losses"]["tolerance"]  # fp32: a leak is far outside
    assert p["leak_sweep"]["caught"] == p["leak_sweep"]["pairs"]
    assert status["packing_sdpa"]["figures"]["control_error"] > 100 * status["packing_sdpa"]["figures"]["tolerance"]
    assert status["loop_8bit"]["status"] == "SKIP" and "not selected" in status["loop_8bit"]["reason"]


@pytest.mark.slow
def test_parts_6_and_7_code_runs_on_a_tiny_shape_on_cpu(tmp_path):
    """The 7B path's code (random checkpoint, 4-bit load through ft.model, memory vs the estimate, timed steps with
    and without gradient checkpointing, prefix sharing vs packing) on a 2-layer Qwen2 shape: what a GPU run does with
    the real shape, so that a GPU's minutes aren't spent finding a typo."""
    proc, out, _ = run_script(tmp_path, "--device", "cpu", "--big-shape", "tiny", "--only",
                              "memory_at_load_7b,speed_7b_gc_on,speed_prefix_vs_packing", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = {c["name"]: c for c in json.loads(out.read_text())["checks"]}
    for name in ("memory_at_load_7b", "speed_7b_gc_on", "speed_prefix_vs_packing"):
        assert status[name]["status"] == "PASS", status[name]
    mem = status["memory_at_load_7b"]["figures"]
    assert mem["at_load"]["ok"] and mem["after_add_lora"]["ok"] and mem["double_quant"] and mem["quant_type"] == "nf4"
    speed = status["speed_prefix_vs_packing"]["figures"]
    assert speed["token_ratio"] > 1 and speed["loss_relative_difference"] < 1e-4  # fp32: the same loss both ways
