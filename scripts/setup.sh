#!/usr/bin/env bash
# One-time, idempotent setup of everything the pipeline and the tests need:
#   - a Python venv built from requirements/lock.txt, cached under $CACHE and keyed by the lock's
#     hash (plus Python and Horovod versions), linked as .venv: a second run, even in a fresh
#     clone, finds it ready and takes seconds;
#   - Horovod compiled against that TensorFlow with Gloo (pip caches the wheel), then checked;
#   - the Delta Lake jars, and hadoop-aws with its AWS SDK bundle (for a lakehouse on s3a://),
#     fetched with Maven into $CACHE/jars, linked as .jars;
#   - Chromium from Debian's packages, for the report's browser test;
#   - this checkout installed into the venv (editable, no dependencies).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
python=${PYTHON:-python3.11}
cache=${INTEREST_DECAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/interest-decay}
delta_version=3.2.1
horovod_version=0.28.1
# Spark 3.5.3 is built on Hadoop 3.3.4; hadoop-aws must match it, and 1.12.262 is the SDK it was built with.
hadoop_version=3.3.4
aws_sdk_version=1.12.262
pip_version=24.3.1
started=$SECONDS

say() { printf '[setup %3ds] %s\n' "$((SECONDS - started))" "$*"; }

command -v "$python" >/dev/null || { echo "setup: $python not found (Python 3.11 is required)" >&2; exit 1; }
"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' || { echo "setup: $python is not Python 3.11" >&2; exit 1; }
command -v java >/dev/null || { echo "setup: java not found (Spark needs a JDK 17)" >&2; exit 1; }

key=$( { cat requirements/lock.txt; "$python" -VV; echo "horovod=$horovod_version pip=$pip_version"; } | sha256sum | cut -c1-16)
venv="$cache/venv-$key"
mkdir -p "$cache"

if [ -f "$venv/.complete" ]; then
  say "venv $venv is ready (lock unchanged)"
else
  say "building venv $venv from requirements/lock.txt"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade "pip==$pip_version"
  "$venv/bin/pip" install -q -r requirements/lock.txt
  if ! command -v cmake >/dev/null; then
    say "installing cmake and a C++ compiler (Horovod builds with them)"
    apt-get update -qq && apt-get install -y -qq cmake g++ >/dev/null
  fi
  say "installing horovod[spark]==$horovod_version (compiles once, about 6 minutes; pip caches the wheel)"
  HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1 \
  HOROVOD_WITH_GLOO=1 HOROVOD_WITHOUT_MPI=1 HOROVOD_CPU_OPERATIONS=GLOO MAKEFLAGS=-j2 \
    "$venv/bin/pip" install -q --no-build-isolation "horovod[spark]==$horovod_version"
  check=$("$venv/bin/horovodrun" --check-build 2>/dev/null)
  if ! grep -q '\[X\] TensorFlow' <<<"$check" || ! grep -q '\[X\] Gloo' <<<"$check"; then
    echo "$check" >&2
    echo "setup: horovodrun --check-build does not show TensorFlow and Gloo" >&2
    exit 1
  fi
  touch "$venv/.complete"
  say "venv ready; horovod built with TensorFlow and Gloo"
fi
ln -sfn "$venv" .venv

# Chromium from Debian's packages: the test that opens the evaluation report in a real headless
# browser drives it with Playwright (which never downloads a browser of its own here).
if ! command -v chromium >/dev/null; then
  say "installing Chromium (Debian's package) for the report's browser test"
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

jars="$cache/jars/delta-$delta_version-hadoop-aws-$hadoop_version"
artifacts=("io.delta:delta-spark_2.12:$delta_version" "io.delta:delta-storage:$delta_version"
           "org.apache.hadoop:hadoop-aws:$hadoop_version" "com.amazonaws:aws-java-sdk-bundle:$aws_sdk_version")
if [ -f "$jars/.complete" ]; then
  say "jars are ready (Delta $delta_version, hadoop-aws $hadoop_version)"
else
  say "fetching the Delta $delta_version and hadoop-aws $hadoop_version jars with Maven (about 290 MB, once)"
  command -v mvn >/dev/null || { apt-get update -qq && apt-get install -y -qq maven >/dev/null; }
  tmp="$jars.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp"
  for artifact in "${artifacts[@]}"; do
    mvn -q -B dependency:copy -Dartifact="$artifact" -DoutputDirectory="$tmp"
  done
  touch "$tmp/.complete"
  rm -rf "$jars" && mv "$tmp" "$jars"
fi
ln -sfn "$jars" .jars

# Editable install of this checkout (no dependencies: they come from the lock).
# -I keeps the current folder off sys.path, so this sees what is installed, not what is here.
if ! .venv/bin/python -I -c "import interest_decay.jobs as j, interest_decay.model as m, sys; sys.exit(not all(x.__file__.startswith('$root/') for x in (j, m)))" 2>/dev/null \
  || [ ! -x .venv/bin/interest-decay ]; then
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
fi
say "done: .venv -> $venv, .jars -> $jars"
