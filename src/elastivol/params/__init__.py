"""StorageClass / VolumeSnapshotClass parameter parsing.

Each driver has one module here that turns the ``parameters`` map of a CSI request into a typed,
validated object, so that every provider reads the same thing and rejects the same mistakes.
"""
