"""Training: data synthesis, loss and the training loop (imports the model, never the CLI)."""
