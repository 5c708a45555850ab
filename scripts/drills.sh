#!/usr/bin/env bash
# `make drills`: runs issue 14's failure drills (issuer/tests/drills.rs) over real issuer processes and a
# throwaway PostgreSQL (scripts/with-postgres.sh), one at a time, prints each drill's table, and puts the
# tables into the "Failure drills" section of BENCHMARKS.md (between its drills markers, which
# scripts/bench.sh keeps when it rewrites the rest). The tests assert correctness only; the timings in the
# tables are this run's measurements. TOKENGATE_DRILL_KEYS_SECONDS lengthens drill 3 (default 45 s).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO="${CARGO:-cargo}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
report="$CARGO_TARGET_DIR/drills.md"
: > "$report"
command=(scripts/with-postgres.sh "$CARGO" test -p issuer --test drills -- --include-ignored --nocapture --test-threads=1)
echo "+ ${command[*]}" >&2
TOKENGATE_DRILLS_REPORT="$report" "${command[@]}"

keys_seconds="${TOKENGATE_DRILL_KEYS_SECONDS:-45}"
section="$CARGO_TARGET_DIR/drills-section.md"
{
  echo '<!-- drills:begin -->'
  echo '## Failure drills'
  echo
  echo "This section is not part of the \`make bench\` run described at the top of this file." \
       "Produced by \`make drills\` (\`scripts/drills.sh\`, which ran \`${command[*]}\`" \
       "with TOKENGATE_DRILL_KEYS_SECONDS=$keys_seconds) on $(date -u '+%Y-%m-%d %H:%M UTC') from revision" \
       "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- issuer || echo ' (with uncommitted changes)')," \
       "$(nproc) cores, debug build (as \`make test\` runs them). Each table is one drill of" \
       "\`issuer/tests/drills.rs\`; the tests assert what must hold on any machine (nothing lost, no failure" \
       "the fault does not explain), and the times are this run's. Re-running \`make drills\` replaces this section."
  # The tests run in name order: put the tables in drill order (PostgreSQL before SQLite within one).
  python3 - "$report" <<'PY'
import re, sys
chunks = [c for c in re.split(r"\n(?=### )", open(sys.argv[1]).read()) if c.strip()]
key = lambda c: (int(re.search(r"Drill (\d+)", c).group(1)), "SQLite" in c.splitlines()[0])
print("\n" + "\n\n".join(c.strip("\n") for c in sorted(chunks, key=key)))
PY
  echo '<!-- drills:end -->'
} > "$section"
python3 - "$section" <<'PY'
import re, sys
section = open(sys.argv[1]).read().rstrip("\n")
text = open("BENCHMARKS.md").read()
pattern = re.compile(r"<!-- drills:begin -->.*?<!-- drills:end -->", re.S)
text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
open("BENCHMARKS.md", "w").write(text.rstrip("\n") + "\n")
PY
echo "drills: tables written to BENCHMARKS.md (section \"Failure drills\")" >&2
