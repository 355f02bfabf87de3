#!/usr/bin/env bash
# Build .carry/text, the demo pair's training text in the form that fits a device call's 64 MiB
# carry limit beside the repository: corpus parts 000-002 and the Gutenberg classics recompressed
# with xz (41 MB gzip -> 31 MB xz; 37.4 MB with Gutenberg), plus the first documents (4 MB raw, well
# over the 500k validation tokens) of the held-out part-003. The token shards built from it are
# identical to those built from ../shared/data directly (scripts/prepare_corpus.py).
set -euo pipefail
DATA=${1:-../shared/data}
OUT=.carry/text
mkdir -p "$OUT"
for p in 000 001 002; do gzip -dc "$DATA/corpus/part-$p.txt.gz" | xz -9 -T0 > "$OUT/part-$p.txt.xz"; done
gzip -dc "$DATA/gutenberg_classics/gutenberg_classics.clean.txt.gz" | xz -9 -T0 > "$OUT/gutenberg_classics.clean.txt.xz"
python3 - "$DATA/corpus/part-003.txt.gz" "$OUT/part-003.txt.xz" <<'PY'
import gzip, lzma, sys
sep = "\n\f\n"  # the corpus's document separator
docs, size = [], 0
for doc in gzip.open(sys.argv[1], "rt", encoding="utf-8").read().rstrip("\n").split(sep):
    docs.append(doc)
    size += len(doc.encode())
    if size > 4_000_000:
        break
with lzma.open(sys.argv[2], "wt", encoding="utf-8", preset=9) as fh:
    fh.write(sep.join(docs) + "\n")
PY
du -sh "$OUT"
