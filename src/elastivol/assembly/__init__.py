"""One module per (driver, provider): builds the servicers of a `serve` process from its ServeConfig.

This is the only place that knows both the CSI servicers (drivers/) and the concrete providers;
app.build picks the module, importing only the one it needs.
"""
