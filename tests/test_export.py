"""`sqlft export`: the merged model's prompt, the GGUF file read back by transformers' own GGUF loader, the model card
from the run's records, and bad input (tiny random Llama: its SQL is wrong, the plumbing is real)."""
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from ft.data.prompt import build_prompt, prompt_ids
from ft.data.rows import Row

SQLFT = [sys.executable, "-m", "ft.cli"]
ENV = os.environ | {"PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_TOKEN": ""}


def run_config(tiny_model: Path, rows_file: Path, out: Path) -> dict:
    return {
        "model": {"name_or_path": str(tiny_model), "gradient_checkpointing": False},
        "quantization": {"mode": "none", "dtype": "float32", "compute_dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "data": {"source": str(rows_file), "eval_fraction": 0.25, "max_length": 256},
        "train": {"output_dir": str(out), "max_steps": 4, "seed": 0},
        "tracking": {"wandb": False},
        "eval": {"at_end": False, "max_new_tokens": 12, "batch_size": 4},
    }


def make_run(out: Path, tiny_model: Path, rows_file: Path, evaluate: bool = True, step: int = 4,
             lora_std: float = 0.2) -> Path:
    """A run folder as training leaves it (adapter/, checkpoints/step-N/{config.yaml,state.json,adapter},
    metrics.jsonl, eval/{base,finetuned}_*), the adapter random (far from zero unless lora_std 0), evaluated by
    ft.eval.scoring.evaluate through ft.eval.output.PredictionLog (as the final evaluation of training does)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ft.config import load_config, resolve, to_yaml
    from ft.data.sources import load_splits
    from ft.eval.output import PredictionLog, result_settings
    from ft.eval.scoring import evaluate as run_eval
    from ft.model import load_tokenizer

    out.mkdir(parents=True, exist_ok=True)
    (out / "given.yaml").write_text(yaml.safe_dump(run_config(tiny_model, rows_file, out)))
    cfg = resolve(load_config(out / "given.yaml"))
    (out / "given.yaml").unlink()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    model = get_peft_model(base, lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, lora_std)  # 0: the adapter changes nothing (peft's own start)
    ckpt = out / "checkpoints" / f"step-{step:06d}"
    for folder in (out / "adapter", ckpt / "adapter"):
        model.save_pretrained(folder)
    (ckpt / "config.yaml").write_text(to_yaml(cfg))
    (ckpt / "state.json").write_text(json.dumps({"step": step, "examples_seen": 4 * step, "train_dbs": ["shop"],
                                                 "target_tokens_seen": 300, "data_sha1": "x"}))
    (ckpt / "COMPLETED").write_text("")
    (out / "metrics.jsonl").write_text(json.dumps({"step": step, "train/loss": 1.25}) + "\n"
                                       + json.dumps({"step": step, "eval/loss": 1.5}) + "\n")
    if evaluate:
        rows = load_splits(cfg.data, cfg.train.seed)[1]
        tok = load_tokenizer(str(tiny_model))
        settings = result_settings(cfg.eval) | {"template": cfg.data.template}
        for name, at in (("base", 0), ("finetuned", step)):
            log = PredictionLog(out / "eval", name, rows, settings | {"model": str(tiny_model), "step": at})
            with (model.disable_adapter() if name == "base" else torch.no_grad()):
                _, summary = run_eval(model, tok, rows, dataclasses.replace(cfg.eval, batch_size=4, max_new_tokens=12),
                                      train_dbs={"shop"}, on_batch=log.append)
            log.finish(summary)
    return out


@pytest.fixture(scope="module")
def evaluated_run(tmp_path_factory, tiny_model, shop_rows_file):
    return make_run(tmp_path_factory.mktemp("run") / "run", tiny_model, shop_rows_file)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, evaluated_run):
    out = tmp_path_factory.mktemp("exp") / "exported"
    proc = subprocess.run(SQLFT + ["export", str(evaluated_run), "--out", str(out), "--gguf", "f16",
                                   "--gguf", "q8_0", "--dtype", "float32"],
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


ROWS = [Row(question="How many customers live in Paris?", query="", schema="CREATE TABLE customers (id INT, city "
            "TEXT);\n\nCREATE TABLE orders (id INT, total REAL);"),
        # hostile text: a question over two lines with fences, a schema line that opens a section, a hint
        Row(question="  two\nlines ```x``` \r\n", query="", schema="### Answer\n  ### x\nCREATE TABLE t (a INT); ```",
            evidence="hint\nhere")]


@pytest.mark.parametrize("template", ["default", "schema_first", "chat"])
def test_chat_template_builds_the_training_prompt(tiny_model, template):
    from transformers import AutoTokenizer

    from ft.export.prompt import training_chat_template

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    base_template = tok.chat_template
    exported = AutoTokenizer.from_pretrained(str(tiny_model))
    exported.chat_template = training_chat_template(template, tok)
    for row in ROWS:
        messages = [{"role": "system", "content": row.schema}, {"role": "user", "content": row.question}]
        kw = {"hint": row.evidence} if row.evidence else {}
        text = exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)
        assert text == build_prompt(row, template, tok)
        ids = exported.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, **kw)["input_ids"]
        assert list(ids) == prompt_ids(row, tok, template)[0]
        # negative control: the base model's own chat template (what merged folders carried) builds another prompt
        tok.chat_template = base_template
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) != text


def test_export_folder_gguf_read_back_by_transformers(exported, evaluated_run, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    names = {p.name for p in exported.iterdir()}
    assert {"model.safetensors", "tokenizer.json", "generation_config.json", "sqlft.yaml", "README.md",
            "gguf"} <= names, names
    assert {p.name for p in (exported / "gguf").iterdir()} == {"model-f16.gguf", "model-q8_0.gguf", "Modelfile"}
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    assert json.loads((exported / "generation_config.json").read_text())["stop_strings"] == ["\n```"]
    saved = yaml.safe_load((exported / "sqlft.yaml").read_text())
    assert saved["model"]["name_or_path"] == str(exported.resolve()) and saved["quantization"]["mode"] == "none"

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    reference = PeftModel.from_pretrained(base, str(evaluated_run / "adapter")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(exported), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(exported))
    ids = torch.tensor([prompt_ids(r, tok, "default")[0] for r in ROWS[:1]])
    with torch.no_grad():
        want = reference(input_ids=ids).logits
        assert (merged(input_ids=ids).logits - want).abs().max() < 1e-4
        untouched = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)(input_ids=ids).logits
    assert (untouched - want).abs().max() > 0.05  # negative control: the adapter changed the logits

    scale = want.abs().max().item()
    alone = exported / "gguf"
    for kind, bound in (("f16", 2e-3), ("q8_0", 3e-2)):
        # transformers' own GGUF loader, from the export's gguf/ folder (no other tokenizer files there)
        g = AutoModelForCausalLM.from_pretrained(str(alone), gguf_file=f"model-{kind}.gguf", dtype=torch.float32)
        gtok = AutoTokenizer.from_pretrained(str(alone), gguf_file=f"model-{kind}.gguf")
        assert gtok(build_prompt(ROWS[0], "default"))["input_ids"] == tok(build_prompt(ROWS[0], "default"))["input_ids"]
        assert gtok.chat_template == tok.chat_template  # the training prompt travels in the GGUF metadata
        with torch.no_grad():
            diff = (g.eval()(input_ids=ids).logits - want).abs().max().item()
        assert diff < bound * scale, (kind, diff, scale)
    modelfile = (exported / "gguf" / "Modelfile").read_text()
    assert "FROM ./model-f16.gguf" in modelfile and 'PARAMETER stop "```"' in modelfile
    template = modelfile.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    row = ROWS[0]
    assert template.replace("{{ .System }}", row.schema).replace("{{ .Prompt }}", row.question) \
        == build_prompt(row, "default")


def test_gguf_writer_negative_control(tmp_path, tiny_model):
    """The q/k permutation is what makes llama.cpp's layout read back: without it the logits differ."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import ft.export.gguf as writer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    ids = torch.tensor([tok("SELECT name FROM customers WHERE city = 'Paris'")["input_ids"]])
    writer.write_gguf(model, tok, tmp_path / "good.gguf", "f16")
    original = writer._permute
    try:
        writer._permute = lambda w, n: w
        writer.write_gguf(model, tok, tmp_path / "bad.gguf", "f16")
    finally:
        writer._permute = original
    diffs = {}
    for name in ("good", "bad"):
        g = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=f"{name}.gguf", dtype=torch.float32)
        with torch.no_grad():
            diffs[name] = (g.eval()(input_ids=ids).logits - model(input_ids=ids).logits).abs().max().item()
    assert diffs["bad"] > 10 * diffs["good"], diffs


def test_card_shows_what_the_run_measured(exported, evaluated_run):
    from huggingface_hub import ModelCard

    card = (exported / "README.md").read_text()
    finetuned = json.loads((evaluated_run / "eval" / "finetuned_metrics.json").read_text())
    base = json.loads((evaluated_run / "eval" / "base_metrics.json").read_text())
    parsed = ModelCard.load(exported / "README.md")  # the Hub's own parser
    results = parsed.data.eval_results
    ex = next(r for r in results if r.metric_name.startswith("EX (greedy)"))
    assert ex.metric_value == round(100 * finetuned["ex"], 1)
    assert f"questions scored | {base['n']} | {finetuned['n']} |" in card
    valid = f"| valid SQL (`valid`) | {100 * base['valid']:.1f} % | {100 * finetuned['valid']:.1f} % |"
    assert valid in card
    assert "EX, unseen questions, training databases" in card and "tier join" in card
    assert "last logged training loss: 1.250 (step 4)" in card
    assert "### Task\nGenerate a SQL query" in card  # the prompt format, with an example
    assert "vllm serve" in card and "ollama create" in card and "gguf/model-q8_0.gguf" in card
    assert "not evaluated" not in card
    # the run's figures are of the model as trained, and the card says they are not of the merged model it ships
    assert "**These figures are of the model as trained, not of this merged model**" in card


def test_card_says_which_form_was_scored():
    from ft.export.card import Evaluation, _scored_form

    trained = Evaluation("finetuned", {"scored_model": "m + adapter at step 4, as trained: base 4bit nf4",
                                       "settings": {"form": "trained"}}, "finetuned")
    served = Evaluation("eval", {"scored_model": "m + adapter (merged, bf16)", "settings": {"form": "served"}},
                        "finetuned")
    assert "not of this merged model" in _scored_form(trained, {"mode": "4bit"})
    assert "as trained: base 4bit nf4" in _scored_form(trained, {"mode": "4bit"})
    # negative control: the merged model's own evaluation is not flagged
    assert "not of this merged model" not in _scored_form(served, {"mode": "4bit"})


def test_card_of_an_unevaluated_run_says_so(tmp_path, tiny_model, shop_rows_file):
    from ft.config import load_config
    from ft.export.card import Facts, gather, render

    run = make_run(tmp_path / "run", tiny_model, shop_rows_file, evaluate=False)
    cfg = load_config(run / "checkpoints" / "step-000004" / "config.yaml")
    card = render(gather(run / "adapter", cfg), Facts("tiny", None, None, "float32", {}, [], "x"))
    assert "This model was not evaluated" in card and "model-index" not in card and "%" not in card
    assert "license was not found" in card


def test_bad_input_one_line_exit_2_nothing_written(tmp_path, evaluated_run, capsys, monkeypatch):
    from ft.export.__main__ import main

    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def export(*args, run=evaluated_run):
        out = tmp_path / "out"
        code = main([str(run), "--out", str(out), *args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("error")]
        assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
        assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
        return lines[0]

    assert "Unknown GGUF type 'q4_k'" in export("--gguf", "q4_k")
    assert "'/nowhere/base'" in export("--model", "/nowhere/base")
    moved = tmp_path / "moved-run"  # a run whose base model is no longer where it was trained
    shutil.copytree(evaluated_run, moved)
    config = moved / "checkpoints" / "step-000004" / "config.yaml"
    config.write_text(config.read_text().replace(str(yaml.safe_load(config.read_text())["model"]["name_or_path"]),
                                                 "/gone/tiny-llama"))
    assert "model.name_or_path" in export(run=moved) and "/gone/tiny-llama" in export(run=moved)
    assert "--push needs a Hugging Face token" in export("--push", "me/model")
    assert "not a Hub repo id" in export("--push", "not a repo", "--dry-run")
    assert "No LoRA adapter" in export(run=tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main([str(evaluated_run), "--out", str(tmp_path / "out")]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_push_dry_run_checks_the_card_and_uploads_nothing(tmp_path, evaluated_run, capsys, monkeypatch):
    from ft.export.__main__ import main

    monkeypatch.setenv("HF_TOKEN", "")
    assert main([str(evaluated_run), "--out", str(tmp_path / "exported"), "--push", "me/sql-model",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: would upload" in out and "huggingface.co/me/sql-model" in out
    assert "README.md" in out and int(re.search(r"(\d+) evaluation results", out).group(1)) >= 2
