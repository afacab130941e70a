"""The training prompt (ft.data.prompt.build_prompt) as the formats other programs build prompts with.

An exported model is prompted with messages: the **system** message is the database schema (CREATE TABLE
statements), the **user** message is the question, and an optional `hint` (BIRD-style evidence) is a keyword of
`apply_chat_template`. From these, the chat template written with the model (tokenizer_config / chat_template.jinja,
and `tokenizer.chat_template` in the GGUF file) renders exactly the text build_prompt renders for the run's
`data.template`, ending inside the opened ```sql fence; generation stops at the closing fence.

The templates are not written by hand: build_prompt is rendered once with placeholders for the schema, question and
hint, and the text around them becomes the literal parts, so a change to the prompt function changes every export
the same way. The escaping build_prompt applies to user text (the question on one line, no code fences; no schema
line that starts a `###` section) is repeated in Jinja. Ollama's Go templates can't escape: its Modelfile template
is the same text around `{{ .System }}` and `{{ .Prompt }}` (a question on one line, as users type them).
"""
from __future__ import annotations

import json

from ft.data.prompt import STOP, build_prompt
from ft.data.rows import Row

SCHEMA, QUESTION, HINT = "@@SQLFT_SCHEMA@@", "@@SQLFT_QUESTION@@", "@@SQLFT_HINT@@"


def _split(text: str) -> list[tuple[str, str]]:
    """Text with placeholders -> [("text", literal) | ("slot", SCHEMA/QUESTION/HINT)]."""
    parts: list[tuple[str, str]] = []
    while text:
        at = [(text.find(s), s) for s in (SCHEMA, QUESTION, HINT) if s in text]
        if not at:
            parts.append(("text", text))
            break
        i, slot = min(at)
        if i:
            parts.append(("text", text[:i]))
        parts.append(("slot", slot))
        text = text[i + len(slot):]
    return parts


def prompt_parts(template: str, tokenizer=None) -> tuple[list, list, list]:
    """(parts before the hint, parts of the hint (shown only with one), parts after it) of build_prompt's text."""
    plain = build_prompt(Row(question=QUESTION, query="", schema=SCHEMA), template, tokenizer)
    hinted = build_prompt(Row(question=QUESTION, query="", schema=SCHEMA, evidence=HINT), template, tokenizer)
    i = 0
    while i < len(plain) and plain[i] == hinted[i]:
        i += 1
    j = 0
    while j < len(plain) - i and plain[len(plain) - 1 - j] == hinted[len(hinted) - 1 - j]:
        j += 1
    inserted = hinted[i:len(hinted) - j]
    if plain[:i] + plain[len(plain) - j:] != plain or HINT not in inserted or SCHEMA in inserted \
            or QUESTION in inserted:
        raise ValueError(f"prompt template {template!r}: the hint is not a plain insertion")
    return _split(hinted[:i]), _split(hinted[i:len(hinted) - j]), _split(hinted[len(hinted) - j:])


# Jinja for ft.data.prompt's escaping: _inline (question, hint) and _ddl (schema).
_INLINE = ("| trim | replace('\\r\\n', ' ') | replace('\\r', ' ') | replace('\\n', ' ') "
           "| replace('```', \"'''\")")
_VARS = {QUESTION: "ns.question", HINT: "hint"}


def _jinja(parts: list[tuple[str, str]]) -> str:
    out = []
    for kind, value in parts:
        if kind == "text":
            out.append("{{- " + json.dumps(value) + " -}}")
        elif value == SCHEMA:
            out.append("{%- for line in (ns.schema | trim | replace('```', \"'''\")).split('\\n') -%}"
                       "{%- if not loop.first -%}{{- '\\n' -}}{%- endif -%}"
                       "{%- if line.lstrip(' \\t').startswith('###') -%}{{- '-- ' -}}{%- endif -%}"
                       "{{- line -}}{%- endfor -%}")
        else:
            out.append("{{- (" + _VARS[value] + " | string) " + _INLINE + " -}}")
    return "".join(out)


def training_chat_template(template: str, tokenizer=None) -> str:
    """A Jinja chat template rendering build_prompt(row, template): system message = schema, user message =
    question (the last of each counts), keyword `hint` = evidence; BOS first where the tokenizer adds one, since
    chat templates are tokenized without special tokens."""
    before, hint, after = prompt_parts(template, tokenizer)
    bos = ""
    if tokenizer is not None and tokenizer.bos_token_id is not None:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        if probe and probe[0] == tokenizer.bos_token_id:
            bos = "{{- bos_token -}}"
    head = ("{%- set ns = namespace(schema='', question='') -%}"
            "{%- for message in messages -%}"
            "{%- if message['role'] == 'system' -%}{%- set ns.schema = message['content'] -%}"
            "{%- elif message['role'] == 'user' -%}{%- set ns.question = message['content'] -%}{%- endif -%}"
            "{%- endfor -%}")
    return (head + bos + _jinja(before) + "{%- if hint is defined and hint -%}" + _jinja(hint) + "{%- endif -%}"
            + _jinja(after))


def ollama_template(template: str, tokenizer=None) -> str:
    """The Modelfile TEMPLATE: the same text around Ollama's `{{ .System }}` (schema) and `{{ .Prompt }}`."""
    before, _, after = prompt_parts(template, tokenizer)
    names = {SCHEMA: "{{ .System }}", QUESTION: "{{ .Prompt }}"}
    return "".join(v if k == "text" else names[v] for k, v in before + after)


def modelfile(gguf_name: str, template: str, tokenizer, max_new_tokens: int) -> str:
    """An Ollama Modelfile beside the GGUF file: our prompt, greedy, stopping at the answer's closing fence."""
    text = ollama_template(template, tokenizer)
    if '"""' in text:
        raise ValueError('the prompt holds """, which a Modelfile TEMPLATE cannot quote')
    fence = STOP.strip()
    return (f"# Ollama: ollama create sqlft-model -f Modelfile && ollama run sqlft-model\n"
            f"# The system message is the schema (CREATE TABLE statements), the prompt is the question.\n"
            f"FROM ./{gguf_name}\n"
            f'TEMPLATE """{text}"""\n'
            f'PARAMETER stop "{fence}"\n'
            f"PARAMETER temperature 0\n"
            f"PARAMETER num_predict {max_new_tokens}\n")


def generation_config(model, tokenizer, cfg):
    """Greedy, at most eval.max_new_tokens, stopping at the closing fence (stop_strings) or EOS."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False, max_new_tokens=cfg.eval.max_new_tokens, stop_strings=[STOP],
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=getattr(model.config, "bos_token_id", None),
    )
