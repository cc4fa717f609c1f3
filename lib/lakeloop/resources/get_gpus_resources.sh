#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs of this host in Spark's ResourceInformation JSON,
# e.g. {"name": "gpu", "addresses": ["0","1"]}. Prints an empty address list without nvidia-smi.
addrs=""
if command -v nvidia-smi >/dev/null 2>&1; then
  addrs=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | sed -e 's/^ *//' -e 's/^/"/' -e 's/$/"/' | paste -sd, -)
fi
echo "{\"name\": \"gpu\", \"addresses\": [${addrs}]}"
