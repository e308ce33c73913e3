#!/bin/bash
# Grade a class on N Slurm tasks and merge them: the array, then the merge once every task has ended.
#
#   deploy/slurm/submit.sh SUBMISSIONS_DIR OUT_DIR N        # from the course checkout
set -euo pipefail
SUBMISSIONS=${1:?usage: submit.sh SUBMISSIONS_DIR OUT_DIR N}
OUT=${2:?usage: submit.sh SUBMISSIONS_DIR OUT_DIR N}
N=${3:?usage: submit.sh SUBMISSIONS_DIR OUT_DIR N}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
array=$(sbatch --parsable --array="1-$N" --export="ALL,SHARDS=$N" "$HERE/grade.sbatch" "$SUBMISSIONS" "$OUT")
merge=$(sbatch --parsable --dependency="afterany:${array%%;*}" "$HERE/merge.sbatch" "$OUT" "$N")
echo "grading: job array $array (shards 1-$N); merge: job $merge -> $OUT/grades.csv, $OUT/gradebook.db"
