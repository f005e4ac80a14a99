"""Sub-commands of the `stlic` CLI: each module has ``add_arguments(parser)`` and ``run(args)``."""
