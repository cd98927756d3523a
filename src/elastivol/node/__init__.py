"""Host operations: loop devices (ioctls), mount(2), filesystems, copies, path checks.

Everything elastivol does to the machine it runs on lives here, behind small typed functions
that raise the domain errors of :mod:`elastivol.errors`.
"""
