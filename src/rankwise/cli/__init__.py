"""The `rankwise` command: one binary, one file per subcommand (finetune, eval, generate, methods, analyze,
compress)."""
