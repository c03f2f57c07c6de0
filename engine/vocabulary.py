"""The names a run's records use, in one torch-free place: the CLI and the TUI read them
without importing torch, and the engine writes them."""

SUBSETS = ("subset", "fixed")  # the trained subset and the (frozen or not) rest of the weights
METRICS = ("dist", "rel", "speed", "path", "cos")  # movement figures per subset (engine/tracking.py says each)
