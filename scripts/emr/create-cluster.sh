#!/usr/bin/env bash
# Create the EMR cluster the `emr` profile is sized for (docs/emr.md walks through it).
#
#   SPARKLES_S3=s3://my-bucket/sparkles KEY_NAME=my-key scripts/emr/create-cluster.sh
#
# Builds the sparkles wheel, uploads it with the bootstrap action to $SPARKLES_S3/emr/, and
# starts the cluster with configurations.json (the executors' Python) and an idle timeout;
# prints the cluster id. DRY_RUN=1 prints the commands instead. WHEELHOUSE=s3://… makes the
# bootstrap install from there (nodes without internet or NAT).
#
# Checked against AWS's documentation (2026-11-25): emr-spark-8.1.0 is the long-term-support
# release (Spark 4.1.1, Python 3.11 and 3.13) and lists AmazonCloudWatchAgent, Delta, Hudi,
# Iceberg, JupyterEnterpriseGateway, Livy and Spark: no Hadoop application to ask for.
# Auto-termination takes IdleTimeout in seconds, 60 to 604800.
set -euo pipefail

: "${SPARKLES_S3:?set SPARKLES_S3, e.g. s3://my-bucket/sparkles}"
: "${KEY_NAME:?set KEY_NAME to an EC2 key pair name (for ssh to the primary node)}"
RELEASE=${RELEASE:-emr-spark-8.1.0}          # LTS, Spark 4.1; emr-7.x (Spark 3.5) works too
IDLE_TIMEOUT=${IDLE_TIMEOUT:-3600}           # seconds without a step or job, then terminate
WHEELHOUSE=${WHEELHOUSE:-}
PRIMARY_TYPE=${PRIMARY_TYPE:-m6i.xlarge}
CORE_TYPE=${CORE_TYPE:-m6i.4xlarge}          # conf/emr.yaml's sizing assumes this type
CORE_COUNT=${CORE_COUNT:-2}
CLUSTER_NAME=${CLUSTER_NAME:-sparkles}
SUBNET_ID=${SUBNET_ID:-}
DRY_RUN=${DRY_RUN:-0}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
readonly ROOT

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml")
wheel="sparkles_spark-$version-py3-none-any.whl"
run python3 -m pip wheel --quiet --no-deps --wheel-dir "$ROOT/dist" "$ROOT"
run aws s3 cp --only-show-errors "$ROOT/dist/$wheel" "$SPARKLES_S3/emr/$wheel"
run aws s3 cp --only-show-errors "$ROOT/scripts/emr/bootstrap.sh" "$SPARKLES_S3/emr/bootstrap.sh"

bootstrap_args="$SPARKLES_S3/emr/$wheel${WHEELHOUSE:+,$WHEELHOUSE}"
ec2_attributes="KeyName=$KEY_NAME"
if [[ -n $SUBNET_ID ]]; then
  ec2_attributes+=",SubnetId=$SUBNET_ID"
fi
run aws emr create-cluster \
  --name "$CLUSTER_NAME" \
  --release-label "$RELEASE" \
  --applications Name=Spark \
  --instance-groups \
    "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=$PRIMARY_TYPE" \
    "InstanceGroupType=CORE,InstanceCount=$CORE_COUNT,InstanceType=$CORE_TYPE" \
  --use-default-roles \
  --ec2-attributes "$ec2_attributes" \
  --bootstrap-actions "Path=$SPARKLES_S3/emr/bootstrap.sh,Name=sparkles,Args=[$bootstrap_args]" \
  --auto-termination-policy "IdleTimeout=$IDLE_TIMEOUT" \
  --configurations "file://$ROOT/scripts/emr/configurations.json" \
  --log-uri "$SPARKLES_S3/emr-logs/" \
  --query ClusterId --output text
