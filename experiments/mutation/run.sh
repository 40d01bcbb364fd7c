#!/usr/bin/env bash
# Mutation testing of the pure layer and the method layer with mutmut 3 (slow: not part of CI).
#
#   experiments/mutation/run.sh                          # every mutant without a result yet
#   experiments/mutation/run.sh 'kd_jax.losses.*'        # (re)run one module
#   experiments/mutation/run.sh $(python experiments/mutation/score.py --sample policies 250)
#   experiments/mutation/run.sh 'kd_jax.methods.*'       # the method layer, kd_jax/methods/
#   experiments/mutation/run.sh 'kd_jax.methods.base.*'  # one of its modules
#   experiments/mutation/run.sh 'kd_jax.methods.x_*'     # kd_jax/methods/__init__.py
#
# Works on a snapshot of the committed tree (git archive HEAD) in $MUTATION_DIR (default
# /tmp/kd_jax_mutation), so mutmut's mutants/ tree never lands in the checkout and
# uncommitted work elsewhere in the repository cannot break the run; mutmut's cache of
# results stays there between runs. One worker, niced: the tests compile XLA programs and
# are CPU-bound. Prints the per-module table and the surviving mutants at the end
# (experiments/mutation/score.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
[ -n "${VIRTUAL_ENV:-}" ] || . "$ROOT/.venv/bin/activate"
SCRATCH="${MUTATION_DIR:-/tmp/kd_jax_mutation}"
mkdir -p "$SCRATCH"
git -C "$ROOT" archive HEAD | tar -x -C "$SCRATCH"
cat "$ROOT/experiments/mutation/mutmut.cfg" >> "$SCRATCH/setup.cfg"
cd "$SCRATCH"
# Without arguments mutmut checks only mutants that have no result yet (so a run can be
# interrupted and resumed); mutant names or patterns are rerun whatever their result.
nice -n 10 mutmut run --max-children 1 "$@" || true
python "$ROOT/experiments/mutation/score.py" "$SCRATCH/mutants" --survivors
