"""Built-in methods: one module per method family; each registers itself with `bench.registry`."""
