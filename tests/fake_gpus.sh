#!/usr/bin/env bash
# Fake Spark GPU discovery script for tests on machines without GPUs.
# With FAKE_GPU_STATE_DIR set, every call claims the next free address ("0", then "1", ...)
# atomically (mkdir), so each worker of a local-cluster sees its own GPU; without it, it
# reports two GPUs.
if [ -n "${FAKE_GPU_STATE_DIR:-}" ]; then
  mkdir -p "$FAKE_GPU_STATE_DIR"
  i=0
  until mkdir "$FAKE_GPU_STATE_DIR/$i" 2>/dev/null; do i=$((i + 1)); done
  echo "{\"name\": \"gpu\", \"addresses\": [\"$i\"]}"
else
  echo '{"name": "gpu", "addresses": ["0", "1"]}'
fi
