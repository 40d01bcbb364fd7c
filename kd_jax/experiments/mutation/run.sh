#!/usr/bin/env bash
# Mutation testing of the pure layer and the method layer with mutmut 3 (slow: not part of CI).
#
#   kd_jax/experiments/mutation/run.sh                          # every mutant without a result yet
#   kd_jax/experiments/mutation/run.sh 'kd_jax.losses.*'        # (re)run one module
#   kd_jax/experiments/mutation/run.sh $(python kd_jax/experiments/mutation/score.py --sample policies 250)
#   kd_jax/experiments/mutation/run.sh 'kd_jax.methods.*'       # the method layer, kd_jax/methods/
#   kd_jax/experiments/mutation/run.sh 'kd_jax.methods.base.*'  # one of its modules
#   kd_jax/experiments/mutation/run.sh 'kd_jax.methods.x_*'     # kd_jax/methods/__init__.py
#
# Works on a snapshot of the committed tree (git archive HEAD) in $MUTATION_DIR (default
# /tmp/kd_jax_mutation), so mutmut's mutants/ tree never lands in the checkout and
# uncommitted work elsewhere in the repository cannot break the run; mutmut's cache of
# results stays there between runs. One worker, niced: the tests compile XLA programs and
# are CPU-bound. Prints the per-module table and the surviving mutants at the end
# (kd_jax/experiments/mutation/score.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
[ -n "${VIRTUAL_ENV:-}" ] || . "$ROOT/.venv/bin/activate"
SCRATCH="${MUTATION_DIR:-/tmp/kd_jax_mutation}"
mkdir -p "$SCRATCH"
git -C "$ROOT" archive HEAD | tar -x -C "$SCRATCH"
cat "$ROOT/kd_jax/experiments/mutation/mutmut.cfg" >> "$SCRATCH/setup.cfg"
cd "$SCRATCH"
# Without arguments mutmut checks only mutants that have no result yet (so a run can be
# interrupted and resumed); mutant names or patterns are rerun whatever their result.
nice -n 10 mutmut run --max-children 1 "$@" || true
python "$ROOT/kd_jax/experiments/mutation/score.py" "$SCRATCH/mutants" --survivors
