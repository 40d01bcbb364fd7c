#!/usr/bin/env bash
# Distils torchvision's ResNet-34 into a ResNet-18 on ImageNet (Wang et al.'s Table 5, KD +
# TL-CutMix + pick) on a Cloud TPU pod slice: every host runs the same command, JAX finds the
# other hosts itself (jax.distributed.initialize() under --config.multihost=True), each host
# reads and decodes only its share of every global batch, and the lr is scaled with the
# global batch (0.1 per 256: imagenet.py's optimizer.lr_reference_batch).
#
#   TPU=my-v4-32 ZONE=us-central2-b REPO=URL bash experiments/launch_tpu_pod.sh setup  # once
#   TPU=my-v4-32 ZONE=us-central2-b bash experiments/launch_tpu_pod.sh train   # rerun = resume
#
# Training runs in the background on every host (nohup: a dropped ssh session does not stop
# it), each host writing kd_jax/train.log; the run's own log and metrics are in $WORKDIR.
#
# Before: ImageNet prepared once (python -m kd_jax.experiments.prepare_data
# --dataset=imagenet2012 --manual_dir=RAW --data_dir=$DATA, on any machine with the [tfds]
# extra), on a disk every host mounts at $DATA (a read-only persistent disk, or a copy per
# host); torchvision's resnet34-b627a593.pth at $TEACHER on every host; $WORKDIR on a
# filesystem all hosts share (Filestore / NFS), where the checkpoints of all hosts meet.
set -euo pipefail
: "${TPU:?set TPU to the name of the TPU VM}" "${ZONE:?set ZONE to its zone}"
DATA=${DATA:-/mnt/disks/imagenet/data}
TEACHER=${TEACHER:-/mnt/disks/imagenet/resnet34-b627a593.pth}
WORKDIR=${WORKDIR:-/mnt/shared/runs/imagenet/kd_cutmix_pick}
BATCH=${BATCH:-1024}  # the global batch: 64 per chip on a v4-32's 16 chips

on_all_hosts() {
  gcloud compute tpus tpu-vm ssh "$TPU" --zone="$ZONE" --worker=all --command="$1"
}

case "${1:-train}" in
  setup)
    : "${REPO:?set REPO to the git URL the hosts clone kd_jax from}"
    on_all_hosts "git clone -q $REPO kd_jax 2>/dev/null || git -C kd_jax pull -q; \
      cd kd_jax && python3 -m venv .venv && . .venv/bin/activate && \
      pip install -q -e '.[tfds]' 'jax[tpu]'"
    ;;
  train)
    on_all_hosts "cd kd_jax && . .venv/bin/activate && \
      nohup python -m kd_jax.experiments.distill \
        --config=kd_jax/experiments/configs/imagenet.py:kd_cutmix_pick \
        --config.multihost=True --config.dtype=bfloat16 --config.batch_size=$BATCH \
        --config.data_dir=$DATA --config.teacher_checkpoint=$TEACHER \
        --config.input.workers=16 --workdir=$WORKDIR > train.log 2>&1 &"
    ;;
  *)
    echo "usage: TPU=NAME ZONE=ZONE [REPO=URL] bash $0 setup|train" >&2
    exit 2
    ;;
esac
