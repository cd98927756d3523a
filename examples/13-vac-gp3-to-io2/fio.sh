#!/bin/sh
# Random 4 KiB direct reads on the volume for a few seconds; prints read IOPS (run inside the pod).
fio --name=probe --filename=/data/fio.dat --size=64M --rw=randread --bs=4k --direct=1 --ioengine=libaio \
    --iodepth=16 --time_based --runtime=3 --ramp_time=1 --output-format=json --output=/data/fio.json >/dev/null &&
  sed -n 's/.*"iops" : \([0-9.]*\),.*/\1/p' /data/fio.json | head -n 1
