"""Optimizers: Lookahead and lazy Adam (``torch.optim`` supplies Adam, AdamW and SGD)."""
