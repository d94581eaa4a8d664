#!/usr/bin/env bash
# Run the project on a running cluster without SSH: one EMR step per entry point, each
# `mlflow run` on the primary node with the bootstrap's venv, then wait for them to finish.
#
#   CLUSTER_ID=j-… SPARKLES_S3=s3://my-bucket/sparkles MLFLOW_TRACKING_URI=http://127.0.0.1:5000 \
#     scripts/emr/submit-steps.sh [main] [tune] [promote]        (default: main tune promote)
#
# The project itself is copied to S3 and fetched by each step (steps run as the hadoop user in a
# fresh folder). Steps run one after another; a failed step cancels the rest. DRY_RUN=1 prints
# the commands instead. Checked against AWS's documentation (2026-11-25): command-runner.jar
# runs a command on the primary node; steps can be added while the cluster is STARTING,
# BOOTSTRAPPING, RUNNING or WAITING; `aws emr wait step-complete` gives up after 30 minutes, so
# this script polls describe-step itself.
set -euo pipefail

: "${CLUSTER_ID:?set CLUSTER_ID, e.g. j-ABC123 (aws emr list-clusters --active)}"
: "${SPARKLES_S3:?set SPARKLES_S3, e.g. s3://my-bucket/sparkles}"
: "${MLFLOW_TRACKING_URI:?set MLFLOW_TRACKING_URI (the tracking server the steps log to)}"
EXPERIMENT=${EXPERIMENT:-sparkles-emr}
VENV=${VENV:-/opt/sparkles/venv}
POLL_SECONDS=${POLL_SECONDS:-30}
DRY_RUN=${DRY_RUN:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly ROOT
entry_points=("$@")
if [[ ${#entry_points[@]} == 0 ]]; then
  entry_points=(main tune promote)
fi

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

for entry in "${entry_points[@]}"; do
  case $entry in
    main | featurize | train | tune | promote | predict | eda) ;;
    *) echo "unknown entry point '$entry' (main featurize train tune promote predict eda)" >&2; exit 2 ;;
  esac
done

project="$SPARKLES_S3/emr/project.tar.gz"
archive=$(mktemp --suffix=.tar.gz)
trap 'rm -f "$archive"' EXIT
run tar -czf "$archive" -C "$ROOT" MLproject conda.yaml conf
run aws s3 cp --only-show-errors "$archive" "$project"

steps=()
for entry in "${entry_points[@]}"; do
  script="set -euo pipefail; work=\$(mktemp -d); cd \"\$work\"; aws s3 cp --only-show-errors $project - | tar -xz; export PATH=$VENV/bin:\$PATH MLFLOW_TRACKING_URI=$MLFLOW_TRACKING_URI MLFLOW_EXPERIMENT_NAME=$EXPERIMENT SPARKLES_S3=$SPARKLES_S3; mlflow run . -e $entry --env-manager local --experiment-name $EXPERIMENT -P profile=emr"
  steps+=("Type=CUSTOM_JAR,Name=sparkles-$entry,ActionOnFailure=CANCEL_AND_WAIT,Jar=command-runner.jar,Args=[bash,-c,\"$script\"]")
done
ids=$(run aws emr add-steps --cluster-id "$CLUSTER_ID" --steps "${steps[@]}" --query 'StepIds' --output text)
echo "steps: $ids" >&2
if [[ $DRY_RUN == 1 ]]; then
  exit 0
fi
for id in $ids; do
  while true; do
    state=$(aws emr describe-step --cluster-id "$CLUSTER_ID" --step-id "$id" \
      --query 'Step.Status.State' --output text)
    case $state in
      COMPLETED) echo "$id: COMPLETED" >&2; break ;;
      FAILED | CANCELLED | INTERRUPTED)
        echo "$id: $state (logs: $SPARKLES_S3/emr-logs/$CLUSTER_ID/steps/$id/)" >&2
        exit 1 ;;
      *) sleep "$POLL_SECONDS" ;;
    esac
  done
done
