"""The paper's experiments as data: sweeps of configs, run point by point
through the normal entry point, and their reports."""
