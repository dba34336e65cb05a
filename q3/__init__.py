"""Q3 Platform shared core: command line, config loading and validation, schemas, logging.

Nothing in here imports an area package (dataproc, labeling, synth, train, kernels); the CLI
only dispatches to them by module name.
"""

__version__ = "0.1.0"
