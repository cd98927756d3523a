"""Shared file volumes on the local provider: access points are directories under a pool's file
systems (controller, node), recorded in a registry, with snapshots, usage walks and btrfs quotas."""
