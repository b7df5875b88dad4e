#!/usr/bin/env bash
# The README's test command (`deno task test`): the CPU tests, then the WebGPU
# tests in a second process. `deno task test:cpu` / `deno task test:gpu` run
# one of the two.
#
# WebGPU test files, by convention: every test file under kernels/, and every
# `*gpu*_test.ts` elsewhere (name new ones `<name>_gpu_test.ts`). They share
# one process and one device.
#
# The one rerun: on llvmpipe the WebGPU process was seen to abort in native
# teardown at exit (glibc "double free or corruption", SIGABRT) after every
# test had passed. The WebGPU tests run once more only when the process died
# by a signal (exit status >= 128) AFTER printing a summary with 0 failed;
# only the second run then counts. A failing test, or a crash before the
# summary, is never retried, so a flaky WebGPU test fails the run.
#
# For .ci/run, every test process whose summary counts is echoed as one line
# `counted: cpu|gpu <deno's summary line>`.
set -uo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

which="${1:-all}"
case "$which" in
  all | cpu | gpu) ;;
  *)
    echo "usage: .ci/test.sh [all|cpu|gpu]" >&2
    exit 2
    ;;
esac

# Every WebGPU test file (see the convention above), sorted.
gpu_files=()
while IFS= read -r f; do gpu_files+=("$f"); done < <(
  find . -path ./node_modules -prune -o -path './.*' -prune -o -type f -name '*_test.ts' -print |
    sed 's|^\./||' | grep -E '^kernels/|gpu[^/]*_test\.ts$' | sort
)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# The summary line of the last run in $log ("ok | 3 passed | 0 failed (1s)"), or nothing.
summary_of_log() {
  sed -E 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^(ok|FAILED) \| [0-9]+ passed' | tail -n 1
}

# Runs `deno test -A --parallel "$@"`, output to the terminal and to $log; returns its status.
run_tests() {
  deno test -A --parallel "$@" 2>&1 | tee "$log"
  return "${PIPESTATUS[0]}"
}

status=0

if [ "$which" != gpu ]; then
  ignore=$(IFS=,; echo "${gpu_files[*]}")
  run_tests ${ignore:+"--ignore=$ignore"}
  cpu_status=$?
  summary=$(summary_of_log)
  [ -n "$summary" ] && echo "counted: cpu $summary"
  [ "$cpu_status" -ne 0 ] && status=$cpu_status
fi

if [ "$which" != cpu ]; then
  if [ ${#gpu_files[@]} -eq 0 ]; then
    echo "error: no WebGPU test files found (kernels/, *gpu*_test.ts)" >&2
    exit 1
  fi
  run_tests "${gpu_files[@]}"
  gpu_status=$?
  summary=$(summary_of_log)
  if [ "$gpu_status" -ge 128 ] && [[ "$summary" =~ ^ok\ \|\ [0-9]+\ passed\ \|\ 0\ failed ]]; then
    echo "WebGPU test process died by signal $((gpu_status - 128)) (exit status $gpu_status) after" \
      "every test passed (llvmpipe's teardown abort); running the WebGPU tests once more, and" \
      "only this second run counts"
    run_tests "${gpu_files[@]}"
    gpu_status=$?
    summary=$(summary_of_log)
  fi
  [ -n "$summary" ] && echo "counted: gpu $summary"
  [ "$gpu_status" -ne 0 ] && [ "$status" -eq 0 ] && status=$gpu_status
fi

exit "$status"
