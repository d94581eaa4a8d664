#!/usr/bin/env bash
# EMR bootstrap action: the pinned sparkles stack in /opt/sparkles/venv on every node.
#
#   bootstrap.sh <s3://…/sparkles_spark-*.whl | local .whl> [<s3://…/wheelhouse/ | local dir>]
#
# EMR passes a bootstrap action's Args list as these positional arguments. DRY_RUN=1 checks
# them and says what would be installed, installing nothing.
# Only a wheel of this project: a bare name would ask PyPI, where `sparkles` is somebody else's.
# Without a wheelhouse, pip fetches the dependencies from PyPI (the nodes need internet or NAT);
# with one (`pip download -d wheelhouse dist/sparkles_spark-*.whl boto3` for Linux x86_64,
# Python 3.11, uploaded to S3), nothing leaves the VPC.
#
# EMR's own Spark is kept: pyspark is never installed into the venv. Bootstrap actions run
# before EMR installs Spark, so a .pth file finds EMR's pyspark and py4j when Python starts
# (the driver on the primary node needs it; executors get it from Spark itself).
set -euo pipefail

readonly PACKAGE=${1:?usage: bootstrap.sh <s3://…/sparkles_spark-*.whl | file.whl> [wheelhouse]}
readonly WHEELHOUSE=${2:-}
readonly PYTHON=${SPARKLES_PYTHON:-python3.11}   # keras 3.15 and pyspark 4.3 need >= 3.11
readonly PREFIX=${SPARKLES_PREFIX:-/opt/sparkles}
readonly VENV=$PREFIX/venv
readonly SPARK_PYTHON=${SPARKLES_SPARK_PYTHON:-/usr/lib/spark/python}  # EMR's pyspark

log() { echo "[sparkles-bootstrap] $*" >&2; }

if [[ $PACKAGE != *.whl ]]; then
  log "expected this project's wheel (s3://…/sparkles_spark-<version>-py3-none-any.whl), got '$PACKAGE'"
  exit 2
fi
if [[ -n $WHEELHOUSE && $WHEELHOUSE != s3://* && ! -d $WHEELHOUSE ]]; then
  log "expected a wheelhouse (s3://…/ or a folder), got '$WHEELHOUSE'"
  exit 2
fi
if [[ ${DRY_RUN:-0} == 1 ]]; then
  log "would install $PACKAGE${WHEELHOUSE:+ from $WHEELHOUSE} into $VENV"
  exit 0
fi
as_root() { if [[ $(id -u) == 0 ]]; then "$@"; else sudo "$@"; fi; }

if ! command -v "$PYTHON" >/dev/null 2>&1; then
  log "installing $PYTHON"
  as_root dnf install -y -q "$PYTHON" "$PYTHON-pip" "$PYTHON-devel"
fi
as_root mkdir -p "$PREFIX"
as_root chown "$(id -u):$(id -g)" "$PREFIX"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip

requirement=$PACKAGE
if [[ $PACKAGE == s3://* ]]; then
  requirement="$PREFIX/$(basename "$PACKAGE")"
  aws s3 cp --only-show-errors "$PACKAGE" "$requirement"
fi
index=()
if [[ -n $WHEELHOUSE ]]; then
  wheels=$WHEELHOUSE
  if [[ $WHEELHOUSE == s3://* ]]; then
    wheels="$PREFIX/wheelhouse"
    aws s3 sync --only-show-errors "$WHEELHOUSE" "$wheels"
  fi
  index=(--no-index --find-links "$wheels")
fi
log "installing $requirement into $VENV${WHEELHOUSE:+ from $WHEELHOUSE}"
# boto3: MLflow's S3 artifact store (runs and the tracking server log artifacts to S3)
"$VENV/bin/python" -m pip install --quiet "${index[@]}" "$requirement" "boto3>=1.34"

if "$VENV/bin/python" -m pip show --quiet pyspark 2>/dev/null; then
  log "pyspark was installed into $VENV: it would shadow EMR's Spark; install sparkles without [spark]"
  exit 1
fi
site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cat >"$site/emr-spark.pth" <<PTH
import glob, sys; sys.path.extend(['$SPARK_PYTHON'] + glob.glob('$SPARK_PYTHON/lib/py4j-*-src.zip'))
PTH
log "done: $("$VENV/bin/python" --version), sparkles $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sparkles-spark"))')"
