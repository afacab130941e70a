"""sqlft: fine-tune open LLMs into text-to-SQL models with QLoRA."""
__version__ = "0.1.0"
