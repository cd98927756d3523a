"""elastivol's benchmark suite: every figure is a ratio or a median measured side by side in one run."""
