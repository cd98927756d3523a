#!/usr/bin/env bash
# The floor for one block volume's lifecycle: the same host operations the driver performs,
# done directly, one process per step. Run as: bash floor_lifecycle.sh IMAGE STAGING TARGET FSTYPE SIZE
# Prints one "step seconds" line per step (bash's $EPOCHREALTIME), then "total seconds".
set -euo pipefail
image=$1 staging=$2 target=$3 fstype=$4 size=$5
t0=$EPOCHREALTIME
last=$t0
mark() { local now=$EPOCHREALTIME; echo "$1 $(( ${now/./} - ${last/./} ))"; last=$now; }

truncate -s "$size" "$image";                                      mark truncate
dev=$(losetup --find --show --direct-io=on "$image");              mark losetup
case $fstype in
  ext4) mkfs.ext4 -F -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard "$dev"; opts=() ;;
  xfs)  mkfs.xfs -f -q -K "$dev"; opts=(-o nouuid) ;;
  *) echo "unknown fstype $fstype" >&2; exit 2 ;;
esac;                                                              mark mkfs
mkdir -p "$staging" "$target"
mount -t "$fstype" "${opts[@]}" "$dev" "$staging";                 mark mount
mount --bind "$staging" "$target";                                 mark bind
umount "$target";                                                  mark umount-bind
umount "$staging";                                                 mark umount
losetup -d "$dev";                                                 mark losetup-d
rm -f "$image";                                                    mark rm
rmdir "$target" "$staging"
end=$EPOCHREALTIME
echo "total $(( ${end/./} - ${t0/./} ))"
