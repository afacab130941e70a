"""Evaluation by execution: generate SQL for each question, run it safely, compare with the gold result.

    ft.eval.generation   batched greedy / sampled generation, schema KV reuse
    ft.eval.scoring      Prediction, score_one, summarize, retries, evaluate (generate + score a dataset),
                         score_texts (anyone's SQL, no model)
    ft.eval.testsuite    test-suite accuracy: neighbour databases kept per question, the check
    ft.eval.output       result files, the console table, W&B table rows, two runs compared
    python -m ft.eval    the command (`sqlft eval`)

Used three ways: `sqlft eval` (a model or model + adapter on any dataset, or SQL from a file), periodically during
training on a fixed sample (`eval.every`), and at the end of training (base vs fine-tuned, the adapter switched off
and on).
"""
