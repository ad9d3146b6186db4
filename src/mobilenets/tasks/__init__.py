"""Tasks the training engine runs: each turns a batch into a loss and outputs, and owns its metrics."""
