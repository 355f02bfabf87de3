"""Convert the shared benchmark data into the schemas of the hub datasets lm-eval's tasks read.

    python scripts/convert_task_data.py /path/to/shared/data [--out softpick_bench/data/tasks]

Each official lm-eval task reads one hub dataset (e.g. arc_easy reads allenai/ai2_arc,
ARC-Easy). Writing our copies in exactly those schemas lets our task YAMLs include the
official YAML unchanged and override only where the data comes from, so prompts, targets,
choices and metrics are lm-eval's own. Output per task: <task>/<split>.jsonl.gz (gzip with
mtime 0, so re-running gives identical bytes), the source folder's SOURCE.md (and licence
files), and one manifest.json with row counts, sha256 and the known differences from the hub.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import json
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

Row = dict


def read_jsonl_gz(path: Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def arc(src: Path, name: str) -> list[Row]:
    """AI2 jsonl -> allenai/ai2_arc: question is the stem, choices become {text, label} lists."""
    rows = []
    for rec in read_jsonl_gz(src / "arc" / f"ARC-{name}-Test.jsonl.gz"):
        q = rec["question"]
        rows.append(
            {
                "id": rec["id"],
                "question": q["stem"],
                "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]},
                "answerKey": rec["answerKey"],
            }
        )
    return rows


def lambada(src: Path) -> list[Row]:
    return [{"text": r["text"]} for r in read_jsonl_gz(src / "lambada_openai" / "lambada_test.jsonl.gz")]


def piqa(src: Path) -> list[Row]:
    """Original valid.jsonl + valid-labels.lst -> baber/piqa rows with an int label."""
    labels = (src / "piqa" / "valid-labels.lst").read_text().split()
    rows = list(read_jsonl_gz(src / "piqa" / "valid.jsonl.gz"))
    if len(labels) != len(rows):
        raise ValueError(f"piqa: {len(rows)} rows but {len(labels)} labels")
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(y)} for r, y in zip(rows, labels)]


def sciq(src: Path) -> list[Row]:
    keys = ("question", "distractor3", "distractor1", "distractor2", "correct_answer", "support")
    with gzip.open(src / "sciq" / "test.json.gz", "rt", encoding="utf-8") as fh:
        return [{k: rec[k] for k in keys} for rec in json.load(fh)]


# A HellaSwag context line is "<activity_label>: <ctx_a> <ctx_b>" after preprocessing. In
# ActivityNet items ctx_b is the lowercase start of the last sentence; lm-eval capitalizes it.
_TRAILING_FRAGMENT = re.compile(r"^(?P<a>.*[.!?]) (?P<b>[a-z][^.!?]*)$", re.DOTALL)


def hellaswag(src: Path) -> list[Row]:
    """klosax 6-line text -> Rowan/hellaswag fields that lm-eval's process_docs reads.

    The split of ctx into ctx_a/ctx_b is reconstructed (the text form joined them): a
    trailing fragment that starts lowercase after the last sentence end becomes ctx_b,
    otherwise ctx_b is "" (WikiHow items). See manifest.json "differences".
    """
    with gzip.open(src / "hellaswag" / "hellaswag_val_full.txt.gz", "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"hellaswag: {len(lines)} lines is not a multiple of 6")
    rows = []
    for i in range(0, len(lines), 6):
        head, label, endings = lines[i], lines[i + 1], lines[i + 2 : i + 6]
        activity_label, sep, ctx = head.partition(": ")
        if not sep:
            raise ValueError(f"hellaswag task {i // 6}: no 'label: ' prefix in {head[:60]!r}")
        m = _TRAILING_FRAGMENT.match(ctx)
        ctx_a, ctx_b = (m["a"], m["b"]) if m else (ctx, "")
        rows.append(
            {
                "activity_label": activity_label,
                "ctx_a": ctx_a,
                "ctx_b": ctx_b,
                "ctx": f"{ctx_a} {ctx_b}" if ctx_b else ctx_a,
                "endings": endings,
                "label": str(int(label)),
            }
        )
    return rows


def winogrande(src: Path) -> list[Row]:
    keys = ("sentence", "option1", "option2", "answer")
    return [{k: r[k] for k in keys} for r in read_jsonl_gz(src / "winogrande" / "dev.jsonl.gz")]


def boolq(src: Path) -> list[Row]:
    """SuperGLUE val.jsonl (label "true"/"false") -> aps/super_glue boolq (label 0 = False, 1 = True)."""
    rows = []
    for r in read_jsonl_gz(src / "boolq" / "val.jsonl.gz"):
        label = {"false": 0, "true": 1, False: 0, True: 1}[r["label"]]
        rows.append({"question": r["question"], "passage": r["passage"], "idx": int(r["idx"]), "label": label})
    return rows


_OBQA_CHOICE = re.compile(r"\(([A-D])\) ")


def openbookqa(src: Path) -> list[Row]:
    """Original TSV -> allenai/openbookqa main: '(A) x (B) y ...' parsed into {text, label} lists."""
    text = (src / "openbookqa" / "test.tsv").read_text(encoding="utf-8")
    rows = []
    for rec in csv.DictReader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE):
        marks = list(_OBQA_CHOICE.finditer(rec["Choices"]))
        labels = [m[1] for m in marks]
        if labels != ["A", "B", "C", "D"]:
            raise ValueError(f"openbookqa {rec['ID']}: choice labels {labels} in {rec['Choices']!r}")
        ends = [m.start() for m in marks[1:]] + [len(rec["Choices"])]
        texts = [rec["Choices"][m.end() : e].strip() for m, e in zip(marks, ends)]
        if rec["Complete Question"] != f"{rec['Question Stem']} {rec['Choices']}":
            raise ValueError(f"openbookqa {rec['ID']}: stem + choices do not rebuild the complete question")
        rows.append(
            {
                "id": rec["ID"],
                "question_stem": rec["Question Stem"],
                "choices": {"text": texts, "label": labels},
                "answerKey": rec["Answer Key"],
            }
        )
    return rows


def _is_title_line(line: str) -> bool:
    """A top-level heading ' = Title = ' (not '= = Section = =')."""
    level1 = line.replace("= = =", "===").replace("= =", "==").strip()
    return level1.startswith("= ") and level1.endswith(" =")


def wikitext(src: Path) -> list[Row]:
    """wiki.test.raw -> EleutherAI/wikitext_document_level wikitext-2-raw-v1 test pages.

    As that dataset builds them: the file's lines (split on "\\n") are grouped into pages,
    a new page starting at each top-level heading; a page is its lines joined with "\\n";
    empty (whitespace-only) pages before a heading are dropped, the last page is always kept.
    """
    with gzip.open(src / "wikitext-2" / "wiki.test.raw.gz", "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    pages, current = [], []
    for line in lines:
        if _is_title_line(line):
            page = "\n".join(current)
            if page.strip():
                pages.append(page)
            current = []
        current.append(line)
    pages.append("\n".join(current))
    return [{"page": p} for p in pages]


# task folder -> (converter, split file name, hub dataset it mirrors, source folder, extra files)
CONVERTERS: dict[str, tuple[Callable[[Path], list[Row]], str, str, str, tuple[str, ...]]] = {
    "arc_easy": (lambda s: arc(s, "Easy"), "test", "allenai/ai2_arc ARC-Easy", "arc", ()),
    "arc_challenge": (lambda s: arc(s, "Challenge"), "test", "allenai/ai2_arc ARC-Challenge", "arc", ()),
    "lambada_openai": (lambada, "test", "EleutherAI/lambada_openai default", "lambada_openai", ()),
    "piqa": (piqa, "validation", "baber/piqa", "piqa", ("README.md",)),
    "sciq": (sciq, "test", "allenai/sciq", "sciq", ("license.txt", "readme.txt")),
    "hellaswag": (hellaswag, "validation", "Rowan/hellaswag", "hellaswag", ()),
    "winogrande": (winogrande, "validation", "allenai/winogrande winogrande_xl", "winogrande", ()),
    "boolq": (boolq, "validation", "aps/super_glue boolq", "boolq", ()),
    "openbookqa": (openbookqa, "test", "allenai/openbookqa main", "openbookqa", ()),
    "wikitext": (wikitext, "test", "EleutherAI/wikitext_document_level wikitext-2-raw-v1", "wikitext-2", ()),
}

DIFFERENCES = {
    "arc_easy": "none known (same ids and order as the hub test split)",
    "arc_challenge": "none known (same ids and order as the hub test split)",
    "lambada_openai": "none (the source file is byte-identical to the canonical lambada_test.jsonl)",
    "piqa": "none known (original validation files; label joined from valid-labels.lst)",
    "sciq": "none known (from the SciQ.zip whose sha256 lm-eval's old loader pinned); only the test split shipped",
    "hellaswag": (
        "derived from klosax's preprocessed text, not the original jsonl: (1) fields ind, source_id, split, "
        "split_type are absent (lm-eval does not read them); (2) activity_label, ctx and endings were already "
        "preprocessed (lm-eval's preprocess runs again on them; it is idempotent except where the first pass "
        "differed from lm-eval's); (3) ctx_a/ctx_b are reconstructed: a trailing fragment after the last "
        "sentence end that starts lowercase becomes ctx_b (the ActivityNet pattern; lm-eval capitalizes ctx_b's "
        "first letter and lowercases the rest), otherwise ctx_b is empty. Where the original ctx_b boundary "
        "differs from this guess, the query differs in letter case only."
    ),
    "winogrande": "qID dropped (the hub has no such field); content verified against the original labels",
    "boolq": "label converted from the strings 'true'/'false' to the hub's 1/0",
    "openbookqa": "choices parsed from the TSV's '(A) .. (B) ..' column (checked against 'Complete Question')",
    "wikitext": (
        "pages rebuilt from wiki.test.raw with the hub builder's page rule; wiki.test.raw itself is a "
        "content-verified rebuild (blank lines written as a single space, as in the original)"
    ),
}


def write_jsonl_gz(rows: list[Row], path: Path) -> str:
    """Deterministic gzip (mtime 0, no file name), returns the sha256 of the compressed bytes."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        for row in rows:
            gz.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def convert(src: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for task, (fn, split, hub, folder, extra) in CONVERTERS.items():
        rows = fn(src)
        dest = out / task
        dest.mkdir(exist_ok=True)
        sha = write_jsonl_gz(rows, dest / f"{split}.jsonl.gz")
        for name in ("SOURCE.md", *extra):
            shutil.copyfile(src / folder / name, dest / name)
        manifest[task] = {
            "hub_dataset": hub,
            "split": split,
            "file": f"{task}/{split}.jsonl.gz",
            "rows": len(rows),
            "sha256": sha,
            "source": f"shared/data/{folder}",
            "differences_from_hub": DIFFERENCES[task],
        }
        print(f"{task:16s} {split:10s} {len(rows):6d} rows  {(dest / f'{split}.jsonl.gz').stat().st_size:>9,d} B")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path, help="the shared data folder (holds arc/, piqa/, ...)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "softpick_bench/data/tasks")
    args = parser.parse_args()
    convert(args.src, args.out)


if __name__ == "__main__":
    main()
