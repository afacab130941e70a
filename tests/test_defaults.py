"""A user's run is not the demo: which config a command starts from, which length key rules, what it says."""
import json
import subprocess
import sys

import pytest
from conftest import REPO

from ft.cli import parse
from ft.config import TrainConfig, load_config
from ft.constants import DEFAULT_CONFIG
from ft.train import COMMAND as TRAIN


def test_the_demo_gets_the_demo_config_and_own_data_the_library_defaults(rows_file, tiny_model):
    demo, args = parse(TRAIN, [])
    assert args.config_path == str(DEFAULT_CONFIG) and demo.train.max_minutes is not None
    for own in (["--data.source", str(rows_file)], ["--model.name_or_path", str(tiny_model)],
                ["--data.eval_source", str(rows_file)]):
        cfg, args = parse(TRAIN, own)
        assert args.config_path is None, own
        library = load_config(None, {k[2:]: v for k, v in zip(own[::2], own[1::2])})
        assert cfg == library  # nothing of demo.yaml: not its length, learning rate, template or eval settings
        assert (cfg.train.max_steps, cfg.train.max_minutes, cfg.train.epochs) == (None, None, 1.0)
        assert cfg.train.learning_rate == TrainConfig.learning_rate != demo.train.learning_rate
        assert cfg.data.template != demo.data.template
    # `bundled` and the demo model by name are still the demo
    assert parse(TRAIN, ["--data.source", "bundled"])[1].config_path == str(DEFAULT_CONFIG)


def test_a_length_on_the_command_line_replaces_the_files(capsys, tmp_path):
    cfg, _ = parse(TRAIN, ["--train.epochs", "2"])  # demo.yaml sets train.max_minutes
    assert (cfg.train.epochs, cfg.train.max_minutes, cfg.train.max_steps) == (2.0, None, None)
    err = capsys.readouterr().err
    assert "--train.epochs 2 replaces train.max_minutes" in err and "demo.yaml" in err

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  epochs: 3\n  max_steps: 40\n")
    cfg, _ = parse(TRAIN, ["--config", str(recipe)])  # both in one file: the rule is said
    assert cfg.train.max_steps == 40
    assert "train.max_steps 40 sets the length; train.epochs 3 doesn't apply" in capsys.readouterr().err
    cfg, _ = parse(TRAIN, ["--config", str(recipe), "--time-budget", "30"])
    assert (cfg.train.max_minutes, cfg.train.max_steps) == (30.0, None)
    assert "--train.max_minutes 30 replaces train.max_steps 40" in capsys.readouterr().err
    cfg, _ = parse(TRAIN, ["--config", str(recipe), "--time-budget", "30", "--train.max_steps", "9"])
    assert (cfg.train.max_minutes, cfg.train.max_steps) == (30.0, 9)
    assert "the run ends at whichever comes first" in capsys.readouterr().err
    # one length key: nothing to say
    parse(TRAIN, ["--config", str(recipe), "--train.max_steps", "5"])
    assert "sets the length" not in capsys.readouterr().err.split("replaces")[-1]


def test_time_budget_alias_is_the_config_key():
    from ft.config import ConfigError

    assert parse(TRAIN, ["--time-budget", "12.5"])[0].train.max_minutes == 12.5
    with pytest.raises(ConfigError, match="same setting"):
        parse(TRAIN, ["--time-budget", "5", "--train.max_minutes", "6"])
    with pytest.raises(ConfigError, match="train.max_minutes"):
        parse(TRAIN, ["--time-budget", "0"])


def test_data_stats_says_how_many_steps_the_config_runs(tmp_path, tiny_model, rows_file):
    common = [sys.executable, "-m", "ft.data", "stats", "--model.name_or_path", str(tiny_model),
              "--data.source", str(rows_file), "--data.eval_fraction", "0", "--train.per_device_batch_size", "4"]
    run = subprocess.run(common + ["--train.epochs", "2.5"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "12 optimizer steps per epoch" in run.stdout  # 48 rows, 4 a step
    assert "length: 30 optimizer steps (train.epochs 2.5: 2.50 epochs of 12 steps)" in run.stdout
    budget = subprocess.run(common + ["--train.max_minutes", "5", "--train.max_steps", "20"], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert budget.returncode == 0, budget.stderr
    assert "planned when training starts, for train.max_minutes 5" in budget.stdout
    assert "at most 20 steps" in budget.stdout and "whichever comes first" in budget.stderr


# A spy in place of kernels.get_kernel: says whether bitsandbytes asked for a Hub kernel, without any network.
SPY = """
import sys, kernels
def get_kernel(repo_id, **kw):
    print("FETCH " + repo_id)
    raise ValueError("could not verify publisher trust status (spy)")
kernels.get_kernel = get_kernel
{setup}
import bitsandbytes
"""


def test_bitsandbytes_fetches_no_kernel_from_the_hub():
    """The line every command printed on a CPU with AVX512-BF16: bitsandbytes no longer tries the Hub, nor says so."""
    hooked = SPY.format(setup="from ft.cli import no_hub_kernels; no_hub_kernels()")
    quiet = subprocess.run([sys.executable, "-c", hooked], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert "FETCH" not in quiet.stdout and "gemm_4bit_forward" not in quiet.stderr
    import bitsandbytes.functional as bnbf

    if not bnbf.has_avx512bf16():
        pytest.skip("bitsandbytes tries the Hub kernel only on CPUs with AVX512-BF16: no negative control here")
    loud = subprocess.run([sys.executable, "-c", SPY.format(setup="")], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert "FETCH kernels-community/quantization-bitsandbytes" in loud.stdout  # negative control: it does, unhooked
    assert "Failed to load CPU gemm_4bit_forward from kernels-community" in loud.stderr


def test_the_cpu_quantization_note_quotes_the_measurement():
    from ft.inference import UNQUANTIZED_SPEEDUP

    measured = json.loads((REPO / "bench" / "results" / "cpu_inference_quantization.json").read_text())
    for key in ("no_reuse", "reuse"):
        assert round(measured["unquantized_speedup"][key], 2) == UNQUANTIZED_SPEEDUP[key]
    source = (REPO / "ft" / "inference.py").read_text()
    assert "slower on a CPU" not in source
