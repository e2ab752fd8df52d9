#!/usr/bin/env bash
# Model-checks docs/model/idem.pml with spin: the protocol must satisfy every property, and each mutant must be
# rejected by the property it breaks. Prints one line per check and ends with "model: N passed, N failed".
# Needs spin and a C compiler (apt-get install -y spin gcc). Runs in about 30 s on 2 cores.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/idem-model.XXXXXX)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# check NAME DEFINE PROPERTY EXPECT: EXPECT is "holds" or a pattern pan's output must show (the violation).
check() {
  local name="$1" define="$2" property="$3" expect="$4" dir="$work/$1"
  mkdir -p "$dir" && cp "$here/idem.pml" "$dir/"
  local out
  out=$(cd "$dir" && spin $define -a idem.pml >spin.log 2>&1 && gcc -O2 -o pan pan.c 2>gcc.log \
        && timeout 300 ./pan -a -f -m100000 -N "$property" 2>&1) || true
  local errors; errors=$(printf '%s\n' "$out" | sed -n 's/.*errors: \([0-9]*\).*/\1/p' | tail -1)
  local ok=0
  if [ "$expect" = holds ]; then
    [ "$errors" = 0 ] && printf '%s\n' "$out" | grep -q "Full statespace search" && ok=1
  else
    [ -n "$errors" ] && [ "$errors" != 0 ] && printf '%s\n' "$out" | grep -q -- "$expect" && ok=1
  fi
  if [ $ok = 1 ]; then
    passed=$((passed + 1)); echo "PASS $name ($property: ${expect/holds/holds, $(printf '%s\n' "$out" | sed -n 's/^ *\([0-9.e+]*\) states, stored.*/\1/p' | head -1) states})"
  else
    failed=$((failed + 1)); echo "FAIL $name ($property: expected $expect)"; printf '%s\n' "$out" | tail -20
    [ -f "$dir/spin.log" ] && tail -5 "$dir/spin.log"; [ -f "$dir/gcc.log" ] && tail -5 "$dir/gcc.log"
  fi
}

check protocol-crashed-key-freed "" crashed_key_freed holds
check protocol-final-answer "" final_answer holds
check mutant-no-fence-rejected "-DNO_FENCE" final_answer "assertion violated (tok==(nextToken-1))"
check mutant-release-any-rejected "-DRELEASE_ANY" crashed_key_freed "assertion violated (completions<=1)"
check mutant-no-takeover-rejected "-DNO_TAKEOVER" crashed_key_freed "acceptance cycle"

echo "model: $passed passed, $failed failed"
[ "$failed" = 0 ]
