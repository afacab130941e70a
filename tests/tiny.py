"""A tiny random Llama and a byte-level BPE tokenizer trained locally: no Hub access, seconds to build."""
from __future__ import annotations

from pathlib import Path

import torch

CORPUS = [
    "### Task\nGenerate a SQL query to answer the following question: `How many customers are there?`",
    "### Database Schema\nCREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT, city TEXT, signup_date TEXT);",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id), total REAL);",
    "### Answer\n```sql\nSELECT COUNT(*) FROM customers;\n```",
    "SELECT name, SUM(total) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY name "
    "ORDER BY 2 DESC LIMIT 5",
    "SELECT strftime('%Y-%m', signup_date) AS month, COUNT(*) FROM customers WHERE city = 'Paris' GROUP BY month",
    "WITH t AS (SELECT customer_id, AVG(total) AS a FROM orders GROUP BY customer_id) SELECT * FROM t WHERE a > 100",
    "Which products had the highest revenue? List the top 3 employees by salary. What is the average price?",
]


def build_tokenizer(out_dir: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=["<s>", "</s>", "<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    fast.save_pretrained(out_dir)
    return fast


def build_tiny_model(out_dir: str | Path, seed: int = 0, layers: int = 2, hidden: int = 64) -> Path:
    """A random 2-layer Llama + tokenizer saved as a normal checkpoint folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(out_dir)
    return out_dir
