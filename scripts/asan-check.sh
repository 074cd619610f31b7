#!/usr/bin/env bash
# Reads the sanitizer reports of a test-asan run.  Fails on any
# AddressSanitizer or UBSan error, and on any leak whose allocation stack
# goes through the module: a frame in ngx_chat_* or in ngx_chat_module.so.
# The sanitizer build keeps the module mapped until LeakSanitizer reports
# (ngx_chat_init_module), so its frames are symbolised; a frame in
# "<unknown module>" means code that was unloaded before the report and
# cannot be told from the module, so it fails too.  Leaks of nginx itself
# at exit (its cycle, never freed by design) are listed as a count only.
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

# leak records: blocks split at blank lines
module='ngx_chat_|ngx_chat_module\.so'
leaks() {
    awk -v re="$1" -v neg="$2" 'BEGIN { RS = "" }
        /(Direct|Indirect) leak of/ {
            m = ($0 ~ re); if (neg) m = !m; if (m) print $0 "\n" }' \
        "${files[@]}"
}
count() {
    awk '/(Direct|Indirect) leak of/ { n++; b += $4 }
         END { printf "%d leak records, %d bytes", n, b }'
}

ours=$(leaks "$module" 0)
if [ -n "$ours" ]; then
    echo "leaks in the module:"
    echo "$ours"
    echo "module: $(echo "$ours" | count)"
    fail=1
fi

unknown=$(leaks "<unknown module>" 0 | awk -v re="$module" \
          'BEGIN { RS = ""; ORS = "\n\n" } $0 !~ re')
if [ -n "$unknown" ]; then
    echo "leaks through code unloaded before the report (<unknown module>):"
    echo "$unknown"
    echo "unattributed: $(echo "$unknown" | count)"
    fail=1
fi

nginx=$(leaks "$module|<unknown module>" 1 | count)
echo "sanitizers: ${#files[@]} report files;" \
     "module: $(echo "$ours" | count);" \
     "unattributed: $(echo "$unknown" | count);" \
     "nginx itself (not the module): $nginx"
exit $fail
