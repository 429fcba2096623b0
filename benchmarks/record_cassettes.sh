#!/usr/bin/env bash
# Re-records the cassettes of tests/test_recorded_judge.py and tests/test_recorded_gaming.py against a real
# OpenAI-compatible server.
#
#   benchmarks/record_cassettes.sh                           # every recorded test
#   benchmarks/record_cassettes.sh -k injection              # extra arguments go to pytest
#   benchmarks/record_cassettes.sh -k test_recorded_gaming   # only the held-out gaming styles (-k matches the module)
#   RECORD=missing benchmarks/record_cassettes.sh -k test_recorded_gaming
#                                                            # only the requests the cassette lacks (a change moved a
#                                                            # few); recorded ones no longer made are dropped
#
# Starts `python -m llama_cpp.server` on 127.0.0.1:8765 with the bundled GGUF (or $EVALUATOR_RECORD_MODEL),
# waits until it answers, runs the tests with EVALUATOR_RECORD=1 (each cassette is deleted and
# recorded again; RECORD=missing: kept, and only what it lacks is recorded), and always stops the server on
# exit. Review `git diff tests/cassettes/` afterwards.
#
# Server settings that matter for the recordings:
#   --n_batch 1 --n_ubatch 1  every token is evaluated on its own, so a prompt's logprobs are
#                             bit-identical whatever the server evaluated before. With batched prompt
#                             evaluation, llama.cpp gives the same prompt slightly different logprobs
#                             (about 1e-3) depending on how much of it came from the KV-cache prefix,
#                             which would make the clean-versus-sanitised comparison of the injection
#                             tests compare noise. Slower on the first prompt of a question (about a
#                             minute on 2 cores), fast afterwards thanks to prefix reuse.
#   --logits_all true         needed for logprobs / top_logprobs.
#   --n_threads 1             the recording machine may be busy with other work.
# Takes about 35 minutes on 2 CPU cores (most of it the injection corpus, 400 one-token reads).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
HOST=127.0.0.1
PORT=${EVALUATOR_RECORD_PORT:-8765}
LOG=${EVALUATOR_RECORD_LOG:-/tmp/evaluator-record-server.log}
MODEL=${EVALUATOR_RECORD_MODEL:-$("$PY" -c 'from evaluator.local_model import default_model_path; print(default_model_path())')}

if [ ! -f "$MODEL" ]; then
  echo "model not found: $MODEL (set EVALUATOR_RECORD_MODEL or assemble the bundled GGUF)" >&2
  exit 2
fi
if [ "$PORT" != 8765 ]; then
  echo "the cassettes are recorded against http://127.0.0.1:8765/v1 (tests/conftest_vcr.py); use that port" >&2
  exit 2
fi
if "$PY" - "$HOST" "$PORT" <<'EOF'; then
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
EOF
  echo "something already listens on $HOST:$PORT; stop it first so the recording uses this script's server" >&2
  exit 2
fi

"$PY" -m llama_cpp.server --model "$MODEL" --model_alias qwen --host "$HOST" --port "$PORT" \
  --n_ctx 4096 --n_threads 1 --n_threads_batch 2 --n_batch 1 --n_ubatch 1 --logits_all true \
  --seed 0 --verbose false >"$LOG" 2>&1 &
SERVER=$!
stop_server() {
  if kill -0 "$SERVER" 2>/dev/null; then
    kill "$SERVER" 2>/dev/null || true
    wait "$SERVER" 2>/dev/null || true
  fi
}
trap stop_server EXIT INT TERM

echo "waiting for llama_cpp.server (pid $SERVER) on $HOST:$PORT ..."
for _ in $(seq 1 180); do
  if ! kill -0 "$SERVER" 2>/dev/null; then
    echo "the server exited; see $LOG" >&2
    tail -20 "$LOG" >&2
    exit 1
  fi
  if "$PY" -c "import urllib.request, sys; urllib.request.urlopen('http://$HOST:$PORT/v1/models', timeout=2)" 2>/dev/null; then
    break
  fi
  sleep 1
done
"$PY" -c "import urllib.request; urllib.request.urlopen('http://$HOST:$PORT/v1/models', timeout=2)" >/dev/null

status=0
EVALUATOR_RECORD="${RECORD:-1}" "$PY" -m pytest -q -m "" -p no:cacheprovider tests/test_recorded_judge.py tests/test_recorded_gaming.py "$@" || status=$?
echo "recorded; now replay offline: $PY -m pytest -q -m \"\" tests/test_recorded_judge.py tests/test_recorded_gaming.py"
exit $status
