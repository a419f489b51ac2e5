"""The `automl` command line: one module per command group, assembled in `automl.cli.main`."""
