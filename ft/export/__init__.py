"""`sqlft export`: merged model, model card, GGUF files and an Ollama Modelfile from a run (see __main__.py)."""
