#!/usr/bin/env bash
# Reads the sanitizer reports of a test-asan run.  Fails on any
# AddressSanitizer or UBSan error, and on any leak whose allocation stack
# goes through the module (ngx_chat_*); leaks of nginx itself at exit (its
# cycle, never freed by design) are listed as a count only.
set -u
dir=${1:?usage: asan-check.sh DIR}
shopt -s nullglob
files=("$dir"/asan-log*)
[ ${#files[@]} -eq 0 ] && { echo "sanitizers: no reports"; exit 0; }

fail=0
if grep -l -E "ERROR: AddressSanitizer|runtime error:" "${files[@]}" >/dev/null; then
    echo "sanitizer errors:"
    grep -h -A30 -E "ERROR: AddressSanitizer|runtime error:" "${files[@]}"
    fail=1
fi

# split leak reports into blocks at blank lines; keep those naming ngx_chat_
ours=$(awk 'BEGIN{RS=""} /(Direct|Indirect) leak/ && /ngx_chat_/' "${files[@]}")
if [ -n "$ours" ]; then
    echo "leaks in the module:"
    echo "$ours"
    fail=1
fi

nginx_leaks=$(awk 'BEGIN{RS=""} /(Direct|Indirect) leak/ && !/ngx_chat_/' "${files[@]}" | grep -c "leak of" || true)
echo "sanitizers: ${#files[@]} report files, $nginx_leaks leak records of nginx itself (not the module)"
exit $fail
