#!/usr/bin/env bash
# Run entry points on a running cluster one after another, each as
# `mlflow run --backend emr` (src/sparkles/emr/backend.py: an EMR step per run, into the run it
# creates on your tracking server, its logs attached when it ends). Stops at the first failure.
#
#   CLUSTER_ID=j-… SPARKLES_S3=s3://my-bucket/sparkles MLFLOW_TRACKING_URI=http://127.0.0.1:5000 \
#     scripts/emr/submit-steps.sh [main] [tune] [promote]        (default: main tune promote)
#
# BACKEND_CONFIG (default conf/emr-backend.json) says where the project goes in S3;
# DRY_RUN=1 prints the commands instead.
set -euo pipefail

: "${CLUSTER_ID:?set CLUSTER_ID, e.g. j-ABC123 (aws emr list-clusters --active)}"
: "${SPARKLES_S3:?set SPARKLES_S3, e.g. s3://my-bucket/sparkles}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI (the tracking server the steps log to)}"
EXPERIMENT=${EXPERIMENT:-sparkles-emr}
DRY_RUN=${DRY_RUN:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly ROOT
BACKEND_CONFIG=${BACKEND_CONFIG:-$ROOT/conf/emr-backend.json}
entry_points=("$@")
if [[ ${#entry_points[@]} == 0 ]]; then
  entry_points=(main tune promote)
fi

for entry in "${entry_points[@]}"; do
  case $entry in
    main | featurize | train | tune | promote | predict | eda) ;;
    *) echo "unknown entry point '$entry' (main featurize train tune promote predict eda)" >&2; exit 2 ;;
  esac
done

export SPARKLES_EMR_CLUSTER_ID=$CLUSTER_ID SPARKLES_S3 MLFLOW_TRACKING_URI
for entry in "${entry_points[@]}"; do
  command=(mlflow run "$ROOT" --backend emr --backend-config "$BACKEND_CONFIG" -e "$entry"
    --experiment-name "$EXPERIMENT" -P profile=emr)
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "${command[@]}"
    printf '\n'
  else
    "${command[@]}"
  fi
done
