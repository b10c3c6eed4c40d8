"""Scripts that train the sample runs (importable so that tests and benchmarks share the models)."""
