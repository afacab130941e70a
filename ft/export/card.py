"""The model card (README.md with Hugging Face front matter) of an export, from the run's own records only.

    records = gather(adapter_path, cfg)        # the run's config, state, evaluation files, logged losses
    text = render(records, facts)              # front matter + Markdown

Every figure on the card is read from a file the run wrote: evaluations from `<run>/eval/*metrics.json`
(ft.eval.output.PredictionLog: the final base / fine-tuned evaluation of training, and any `sqlft eval` of the run),
losses from `<run>/metrics.jsonl`, steps and examples from the checkpoint's state.json. Rates are read generically:
the names of ft.metrics first, then any other share a newer evaluation writes, by its key. An evaluation of another
step than the exported adapter's is not shown as this model's. A run without an evaluation gets a card that says so
and states no accuracy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ft.data.prompt import STOP, build_prompt
from ft.data.rows import Row
from ft.metrics import COUNTS, KINDS, RATES, RETRY_RATES, TIERS, TIMINGS, VOTE_MEANS, VOTE_RATES

# Bases whose Hub id the config doesn't spell (an alias for a GGUF file shipped in a pip package).
HUB_IDS = {"smollm2-135m-instruct": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_KNOWN = set(RATES) | set(COUNTS) | set(RETRY_RATES) | set(VOTE_RATES) | set(VOTE_MEANS) | set(TIMINGS) | {
    "complete", "rows", "settings", "tiers", "kinds", "gold_failed_by_db", "constrain_masked_tokens"}

EXAMPLE = Row(question="How many orders did each city place in 2024?", query="",
              schema="CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT);\n\n"
                     "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), "
                     "total REAL, day TEXT);")


@dataclass
class Evaluation:
    name: str  # the file's prefix: base, finetuned, eval, eval-<data>
    metrics: dict
    role: str  # base | finetuned

    @property
    def settings(self) -> dict:
        return self.metrics.get("settings") or {}

    @property
    def decoding(self) -> str:
        s = self.settings
        if s.get("samples"):
            return f"voted over {s['samples']} samples + greedy"
        if s.get("retries"):
            return f"greedy, {s['retries']} retries on validation failure"
        return "greedy"


@dataclass
class Records:
    run_dir: Path | None
    adapter: Path
    config: dict
    state: dict
    evaluations: list[Evaluation] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # evaluation files not shown, and why
    losses: dict = field(default_factory=dict)  # last logged train/loss, eval/loss and their steps


def _last_losses(run_dir: Path) -> dict:
    out: dict = {}
    try:
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        for key in ("train/loss", "eval/loss"):
            if isinstance(rec.get(key), (int, float)):
                out[key] = (rec[key], rec.get("step"))
    return out


def gather(adapter: str | Path, cfg) -> Records:
    """What the run of this adapter recorded (nothing but its config when it isn't one of our runs)."""
    from ft.inference import resolve_adapter, run_of

    folder, config_file = resolve_adapter(adapter)
    run_dir, state = run_of(adapter)
    config = cfg.to_dict()  # the run's own config when it has one (the export overrides quantization for merging)
    if config_file is not None:
        try:
            config = yaml.safe_load(config_file.read_text()) or config
        except (OSError, yaml.YAMLError):
            pass
    rec = Records(run_dir, folder, config, state)
    if run_dir is None:
        return rec
    rec.losses = _last_losses(run_dir)
    step = state.get("step")
    for path in sorted((run_dir / "eval").glob("*metrics.json")):
        name = path.name[: -len("metrics.json")].rstrip("_") or "eval"
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            rec.skipped.append(f"{path.name}: unreadable")
            continue
        if not isinstance(metrics, dict) or not metrics.get("n"):
            rec.skipped.append(f"{path.name}: no question scored")
            continue
        if not metrics.get("complete", True):
            rec.skipped.append(f"{path.name}: incomplete ({metrics.get('n')} of {metrics.get('rows')} questions)")
            continue
        at = (metrics.get("settings") or {}).get("step")
        role = "base" if name.startswith("base") or at == 0 else "finetuned"
        if role == "finetuned" and step is not None and at is not None and at != step:
            rec.skipped.append(f"{path.name}: of step {at}, not the exported adapter's step {step}")
            continue
        rec.evaluations.append(Evaluation(name, metrics, role))
    return rec


# ------------------------------------------------------------------------------------------------ rendering


def _pct(v) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) and not isinstance(v, bool) else "—"


def _extra_rates(m: dict) -> list[str]:
    """Shares a newer evaluation writes that ft.metrics doesn't name yet (e.g. test-suite accuracy)."""
    return [k for k, v in m.items() if k not in _KNOWN and isinstance(v, (int, float)) and not isinstance(v, bool)
            and 0 <= v <= 1]


def _split(d: dict, ev: Evaluation) -> str:
    """Which questions an evaluation scored, from the run's data config (or the file name of `sqlft eval --data`)."""
    if ev.name.startswith("eval-"):
        return f"the dataset `{ev.name[5:]}` given to `sqlft eval --data`"
    if d.get("eval_source"):
        split = f", split `{d['eval_split']}`" if d.get("eval_split") else ""
        text = f"`{d['eval_source']}`{split}"
    elif d.get("eval_dbs"):
        text = f"the questions of the held-out databases {', '.join(d['eval_dbs'])} of `{d['source']}`"
    elif d.get("eval_fraction"):
        text = f"{100 * d['eval_fraction']:g} % of `{d['source']}` held out"
    elif d.get("source") == "bundled" or d.get("format") == "bundled":
        text = "the bundled dataset's held-out split (new questions on the training databases, and databases never " \
               "trained on)"
    else:
        text = f"5 % of `{d.get('source')}` held out (the default split)"
    if d.get("max_eval_rows"):
        text += f", a seeded subset of {d['max_eval_rows']}"
    return text


def _scored_form(ev: Evaluation, q: dict) -> str:
    """Which model the figures are of. Training's own evaluation (and `sqlft eval --as trained`) scores the model as
    trained, the base loaded as quantization.mode with the adapter on top: not the merged 16-bit weights exported
    here, whose answers can differ; a reader must not take one for the other."""
    what = ev.metrics.get("scored_model")
    if ev.settings.get("form", "trained") != "trained":  # `sqlft eval --as served`: the merged model
        return f"Scored: {what or 'the merged model'} (as this export holds it)."
    mode = ev.settings.get("quantization") or q.get("mode", "?")
    return (f"Scored: {what or f'the model as trained (base {mode}, the adapter on top)'}. **These figures are of the "
            f"model as trained, not of this merged model**, whose answers can differ (the base is not loaded "
            f"{mode} here); measure the export itself with `sqlft eval --config sqlft.yaml` in this folder.")


def _result_table(pair: list[Evaluation]) -> list[str]:
    names = [("base model" if e.role == "base" else "fine-tuned") + f" ({e.decoding})" for e in pair]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(pair)]
    ms = [e.metrics for e in pair]
    lines.append("| questions scored | " + " | ".join(str(m.get("n", "—")) for m in ms) + " |")
    keys = [k for k in RATES if any(k in m for m in ms)]
    keys += [k for k in [*VOTE_RATES, *RETRY_RATES] if any(k in m for m in ms)]
    keys += [k for k in dict.fromkeys(x for m in ms for x in _extra_rates(m))]
    for k in keys:
        label = RATES.get(k) or VOTE_RATES.get(k) or RETRY_RATES.get(k) or k
        lines.append(f"| {label} (`{k}`) | " + " | ".join(_pct(m.get(k)) for m in ms) + " |")
    for kind, label in KINDS.items():
        if any(kind in m.get("kinds", {}) for m in ms):
            n = next((m["kinds"][kind].get("n") for m in ms if kind in m.get("kinds", {})), "?")
            lines.append(f"| EX, {label} (n = {n}) | "
                         + " | ".join(_pct(m.get("kinds", {}).get(kind, {}).get("ex")) for m in ms) + " |")
    tiers = [t for t in TIERS if any(t in m.get("tiers", {}) for m in ms)]
    tiers += sorted({t for m in ms for t in m.get("tiers", {})} - set(tiers))
    for t in tiers:
        n = next((m["tiers"][t].get("n") for m in ms if t in m.get("tiers", {})), "?")
        lines.append(f"| EX, tier {t} (n = {n}) | "
                     + " | ".join(_pct(m.get("tiers", {}).get(t, {}).get("ex")) for m in ms) + " |")
    failed = max(m.get("gold_failed", 0) for m in ms)
    if failed:
        lines.append("| gold query failed (left out of every rate) | "
                     + " | ".join(str(m.get("gold_failed", 0)) for m in ms) + " |")
    return lines


def _pairs(evals: list[Evaluation]) -> list[list[Evaluation]]:
    """Each fine-tuned evaluation, with the base evaluation of the same questions and decoding beside it."""
    bases = [e for e in evals if e.role == "base"]
    out = []
    for ft in (e for e in evals if e.role == "finetuned"):
        same = [b for b in bases if b.metrics.get("rows") == ft.metrics.get("rows")
                and {k: v for k, v in b.settings.items() if k not in ("step", "model", "adapter")}
                == {k: v for k, v in ft.settings.items() if k not in ("step", "model", "adapter")}]
        out.append(same[:1] + [ft])
    if not out:
        out = [[b] for b in bases]
    return out


def model_index(rec: Records, title: str) -> list[dict]:
    """`model-index` results: each fine-tuned evaluation's EX, valid SQL and EX per kind, in percent."""
    d = rec.config.get("data", {})
    results = []
    for ev in (e for e in rec.evaluations if e.role == "finetuned"):
        m = ev.metrics
        metrics = [{"type": "execution_accuracy", "name": f"EX ({ev.decoding})", "value": round(100 * m["ex"], 1)}]
        if "ex_greedy" in m:
            metrics.append({"type": "execution_accuracy", "name": "EX (greedy answer)",
                            "value": round(100 * m["ex_greedy"], 1)})
        if "valid" in m:
            metrics.append({"type": "valid_sql", "name": "valid SQL", "value": round(100 * m["valid"], 1)})
        for kind, label in KINDS.items():
            if "ex" in m.get("kinds", {}).get(kind, {}):
                metrics.append({"type": f"execution_accuracy_{kind}", "name": f"EX, {label}",
                                "value": round(100 * m["kinds"][kind]["ex"], 1)})
        source = d.get("eval_source") or d.get("source")
        results.append({"task": {"type": "text-generation", "name": "Text-to-SQL"},
                        "dataset": {"name": _split(d, ev), "type": str(source),
                                    "split": d.get("eval_split") or "eval"},
                        "metrics": metrics})
    return [{"name": title, "results": results}] if results else []


@dataclass
class Facts:
    """What the export itself knows: the base model's Hub id and license (None: not found), the merged dtype,
    the files written (name -> bytes), GGUF types, the folder name."""
    base_model: str
    base_hub_id: str | None
    base_license: str | None
    dtype: str
    files: dict[str, int]
    gguf: list[str]
    name: str


def _front_matter(rec: Records, facts: Facts, title: str) -> str:
    meta: dict = {}
    if facts.base_hub_id:
        meta["base_model"] = facts.base_hub_id
    if facts.base_license:
        meta["license"] = facts.base_license
    meta["library_name"] = "transformers"
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = ["text-to-sql", "sql", "sqlft", "lora", "peft"] + (["gguf"] if facts.gguf else [])
    d = rec.config.get("data", {})
    hub_sets = [s for s in (d.get("source"), d.get("eval_source")) if s and d.get("format") == "hf"]
    if hub_sets:
        meta["datasets"] = hub_sets
    index = model_index(rec, title)
    if index:
        meta["model-index"] = index
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def render(rec: Records, facts: Facts, tokenizer=None) -> str:
    c = rec.config
    d, lo, t, q = c["data"], c["lora"], c["train"], c["quantization"]
    title = f"{facts.name}: text-to-SQL fine-tune of {facts.base_hub_id or facts.base_model}"
    step = rec.state.get("step")
    out = [_front_matter(rec, facts, title), f"# {title}", ""]
    out.append(f"A LoRA fine-tune (r {lo['r']}, alpha {lo['alpha']}, on {', '.join(lo['target_modules'])}) of "
               f"`{facts.base_hub_id or facts.base_model}` for text-to-SQL, trained by sqlft"
               + (f" for {step} optimizer steps ({rec.state.get('examples_seen', '?')} examples)" if step else "")
               + f", merged into the base weights in {facts.dtype}.")
    if not facts.base_license:
        out.append("\nThe base model's license was not found in its files: check it before publishing this model.")

    out += ["", "## Evaluation", ""]
    if not rec.evaluations:
        where = f"`{rec.run_dir / 'eval'}`" if rec.run_dir else "the adapter's folder (not one of sqlft's runs)"
        out.append(f"**This model was not evaluated**: there is no evaluation record in {where}, so this card states "
                   "no accuracy. Measure it by execution with `sqlft eval --adapter RUN/adapter` (the results land "
                   "in RUN/eval/, where `sqlft export` finds them) and export again.")
    else:
        out.append("Measured by sqlft by executing the SQL (read-only, each answer's result compared with the gold "
                   "query's), as recorded in the run's evaluation files. **EX** (execution accuracy): the answer's "
                   "result equals the gold query's (rows as a multiset, in order only when the gold query has "
                   "ORDER BY), over the questions whose gold query ran; **valid SQL**: the answer executes; "
                   "**hallucination**: the answer names a table or column the schema lacks. "
                   "The base model ran with the same prompt and decoding (the adapter switched off).")
        for pair in _pairs(rec.evaluations):
            ev = pair[-1]
            s = ev.settings
            out += ["", f"### `{ev.name}`: {ev.metrics.get('n')} questions from {_split(d, ev)}", ""]
            out += _result_table(pair)
            rules = {k: s[k] for k in ("max_new_tokens", "timeout_s", "max_rows", "retries", "samples",
                                       "temperature", "top_p", "constrain", "template", "quantization") if k in s}
            out += ["", "Settings: " + ", ".join(f"`{k}` {v}" for k, v in rules.items())
                    + (f"; adapter of step {s['step']}" if s.get("step") else "") + "."]
            out += ["", _scored_form(ev, q)]
        if rec.skipped:
            out += ["", "Not shown: " + "; ".join(rec.skipped) + "."]
    out += ["", "Not measured for this export: speed on your hardware, and the accuracy of the GGUF files"
            + (" (their logits against the merged model's are compared by `python bench/export.py`)" if facts.gguf
               else "") + "."]

    out += ["", "## Training", ""]
    src = d.get("source")
    split = f", split {d['split']}" if d.get("split") else ""
    data_text = "the bundled synthetic dataset (SQLite databases with generated question / SQL pairs)" \
        if src == "bundled" else f"`{src}` (format {d.get('format')}{split})"
    out.append(f"- data: {data_text}"
               + (f"; training databases: {', '.join(rec.state['train_dbs'])}" if rec.state.get("train_dbs") else ""))
    if rec.state.get("examples_seen"):
        out.append(f"- {rec.state['examples_seen']} examples in {step} optimizer steps "
                   f"({rec.state.get('target_tokens_seen', '?')} answer tokens)")
    for key, label in (("train/loss", "last logged training loss"), ("eval/loss", "last held-out loss")):
        if key in rec.losses:
            value, at = rec.losses[key]
            out.append(f"- {label}: {value:.3f} (step {at})")
    out.append(f"- recipe: learning rate {t['learning_rate']}, {t['lr_scheduler']} schedule, "
               f"micro-batches of {t['per_device_batch_size']} row(s) x {t['gradient_accumulation_steps']} "
               "accumulation, "
               f"base loaded as {q['mode'] if q['mode'] != 'none' else 'unquantized'}"
               + (f" (compute {q['compute_dtype']})" if q["mode"] != "none" else "")
               + f", max length {d['max_length']}, prompt template `{d['template']}`"
               + (", schema linking" + (f" within {d['schema_budget']} tokens" if d.get("schema_budget") else "")
                  if d.get("schema_linking") else "")
               + ". The whole config is `sqlft.yaml` beside this card.")

    example = build_prompt(EXAMPLE, d["template"], tokenizer)
    out += ["", "## Prompt format", "",
            "The model was trained on one prompt, and answers inside an opened ```` ```sql ```` fence, stopping at "
            f"the closing fence (`{STOP!r}`, the stop string in `generation_config.json`). Its chat template builds "
            "that prompt from two messages: **system** = the database schema (CREATE TABLE statements), **user** = "
            "the question (one line); a BIRD-style hint goes in the keyword `hint`. Example:", "", "````text",
            example + "````", ""]

    gguf = [f for f in facts.files if f.endswith(".gguf")]
    out += ["## How to use", "", "With transformers (the chat template builds the training prompt):", "", "```python",
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            'tok = AutoTokenizer.from_pretrained("MODEL")',
            'model = AutoModelForCausalLM.from_pretrained("MODEL")',
            'messages = [{"role": "system", "content": open("schema.sql").read()},',
            '            {"role": "user", "content": "How many orders did each city place in 2024?"}]',
            "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)",
            "out = model.generate(**ids, tokenizer=tok)  # greedy, stops at the closing fence",
            'print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).split("```")[0])',
            "```", "",
            "With vLLM (OpenAI-compatible server; pass the stop string, vLLM reads only the sampling defaults of the "
            "generation config):", "", "```bash", "vllm serve MODEL --generation-config auto",
            "curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' -d '{\"model\": \"MODEL\", "
            "\"messages\": [{\"role\": \"system\", \"content\": \"CREATE TABLE ...\"}, {\"role\": \"user\", "
            "\"content\": \"How many ...?\"}], \"stop\": [\"```\"], \"temperature\": 0}'", "```", ""]
    if gguf:
        out += ["With llama.cpp or Ollama (the GGUF file carries the same chat template; the Modelfile its Ollama "
                "form):", "", "```bash", f"llama-server -m {gguf[0]} --jinja   # then the same chat request as above",
                "cd gguf && ollama create sqlft-model -f Modelfile",
                "ollama run sqlft-model   # /set system <schema>, then ask", "```", ""]
    out += ["With sqlft's server, which adds schema validation, read-only execution and voting over sampled answers "
            "(`--samples N`) and a web page:", "", "```bash", "sqlft serve MODEL --db shop.sqlite --port 8000",
            "```", "", "These commands were not run to make this card; the figures above come from the run's records.",
            "", "## Files", "", "| file | size |", "|---|---|"]
    out += [f"| `{name}` | {_size(size)} |" for name, size in sorted(facts.files.items())]
    return "\n".join(out) + "\n"
