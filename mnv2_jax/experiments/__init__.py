"""The paper's experiments as data: sweeps of configs (`points`), run point
by point through the normal entry point (`runner`), and their reports
(`report`, `plots`). The command line is `python -m mnv2_jax.sweep`."""
