"""Training: the state and its initialisation, the optimizer and schedule,
the loop (`trainer.train_and_evaluate`), checkpoints, metric writers, the
workdir, and the process settings a run starts with (malloc, compilation
cache)."""
