"""Per-module mutation score from mutmut 3's result files (mutants/kd_jax/**/<module>.py.meta).

  python kd_jax/experiments/mutation/score.py /tmp/kd_jax_mutation/mutants [--survivors]
  python kd_jax/experiments/mutation/score.py /tmp/kd_jax_mutation/mutants --sample MODULE N
      (prints N mutant names of kd_jax/MODULE.py drawn at random, seed 0, for run.sh;
      MODULE as a path or dotted: policies, methods/base, methods.base, kd_jax.methods.base,
      methods/__init__ or methods for kd_jax/methods/__init__.py)

Score = killed / (killed + survived + timeout + suspicious); mutants that no selected test
executes ("no tests") count as survivors too, so a module cannot score well by being
untested.
"""

import collections
import json
import pathlib
import random
import sys
from collections.abc import Sequence

STATUS = {
  1: "killed",
  3: "killed",
  0: "survived",
  5: "no tests",
  33: "no tests",
  34: "skipped",
  36: "timeout",
  -24: "timeout",
  24: "timeout",
  152: "timeout",
  255: "timeout",
  None: "not checked",
}


def meta_path(root: pathlib.Path, module: str) -> pathlib.Path:
  """The result file of ``module`` (``policies``, ``methods/base``, ``kd_jax.methods.base``;
  a package name such as ``methods`` means its ``__init__.py``)."""
  module = module.removesuffix(".py").replace(".", "/")
  module = module.removeprefix("kd_jax/")
  if (root / "kd_jax" / module).is_dir():
    module += "/__init__"
  return root / "kd_jax" / f"{module}.py.meta"


def main(argv: Sequence[str]) -> None:
  root = pathlib.Path(argv[1] if len(argv) > 1 else "mutants")
  if "--sample" in argv:
    module, n = argv[argv.index("--sample") + 1], int(argv[argv.index("--sample") + 2])
    names = sorted(json.loads(meta_path(root, module).read_text())["exit_code_by_key"])
    print(" ".join(sorted(random.Random(0).sample(names, min(n, len(names))))))
    return
  show = "--survivors" in argv
  rows = []
  for meta in sorted(root.glob("kd_jax/**/*.py.meta")):
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    counts = collections.Counter(STATUS.get(code, "suspicious") for code in codes.values())
    checked = sum(v for k, v in counts.items() if k not in ("not checked", "skipped"))
    score = counts["killed"] / checked if checked else float("nan")
    name = meta.relative_to(root / "kd_jax").as_posix()[: -len(".meta")]  # methods/base.py
    rows.append((name, len(codes), checked, counts, score))
    if show:
      for mutant, code in sorted(codes.items()):
        status = STATUS.get(code, "suspicious")
        if status not in ("killed", "not checked"):
          print(f"  {status:12s} {mutant}")
  print("| module | mutants | checked | killed | survived | no tests | timeout | score |")
  print("|---|---|---|---|---|---|---|---|")
  for name, total, checked, counts, score in rows:
    print(
      f"| {name} | {total} | {checked} | {counts['killed']} | {counts['survived']} | "
      f"{counts['no tests']} | {counts['timeout']} | {100 * score:.1f} % |"
    )


if __name__ == "__main__":
  main(sys.argv)
