"""`sqlft serve`: one model answering questions on databases over HTTP, with a playground page (see __main__.py)."""
