"""Build a definition-question training set from WordNet 3.0, in the BEIR layout the trainer reads.

Each question asks what a noun means ("What is a barracuda?"); its candidate list holds the noun's
WordNet definition (label 1) and the definitions of its co-hyponyms, of its parent and of random
nouns (label 0). The definitions never name the noun, so the model has to know what the word means
and tell it apart from its siblings ("Western Roman Empire" vs "Eastern Roman Empire"): the skill
a small answer-selection set teaches least.

Only nouns with a single sense are used (a question about a word with several senses would have
several right answers). WordNet 3.0 is free for any use under the Princeton WordNet license
(https://wordnet.princeton.edu/license-and-commercial-use); on Debian it is the package
``wordnet-base`` (``/usr/share/wordnet``).

    python benchmarks/wordnet_qa.py --wordnet /usr/share/wordnet --output runs/wordnet-qa --n 2000

The output is a training source, not a benchmark: it has a ``train`` split only.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("wordnet_qa")

PERSON = "00007846"  # person.n.01: instances under it are asked "Who was ...?"
HYPERNYM_POINTERS = {"@", "@i"}


@dataclass
class Synset:
    offset: str
    words: list[str]
    parents: list[str]
    instance: bool
    definition: str


def parse_data_noun(path: Path) -> dict[str, Synset]:
    """Synsets of WordNet's ``data.noun`` (format: wndb(5WN))."""
    synsets: dict[str, Synset] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):  # licence header
                continue
            head, _, gloss = line.partition(" | ")
            f = head.split()
            offset, n_words = f[0], int(f[3], 16)
            words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            parents, instance = [], False
            for k in range(n_ptr):
                sym, target, pos = f[i + 1 + 4 * k], f[i + 2 + 4 * k], f[i + 3 + 4 * k]
                if sym in HYPERNYM_POINTERS and pos == "n":
                    parents.append(target)
                    instance |= sym == "@i"
            definition = gloss.split('"')[0].strip().rstrip(";").strip()
            synsets[offset] = Synset(offset, words, parents, instance, definition)
    return synsets


def tagged_lemmas(path: Path) -> set[str]:
    """Lemmas of ``index.noun`` with a sense seen in the tagged SemCor corpus (everyday words)."""
    out = set()
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  "):
                continue
            f = line.split()
            n_ptr = int(f[3])
            if int(f[5 + n_ptr]) > 0:  # tagsense_cnt
                out.add(f[0].replace("_", " "))
    return out


def sense_counts(synsets: dict[str, Synset]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for s in synsets.values():
        for w in s.words:
            counts[w.lower()] += 1
    return counts


def is_person(offset: str, synsets: dict[str, Synset], seen: set[str] | None = None) -> bool:
    seen = seen if seen is not None else set()
    if offset == PERSON:
        return True
    if offset in seen or offset not in synsets:
        return False
    seen.add(offset)
    return any(is_person(p, synsets, seen) for p in synsets[offset].parents)


def name(s: Synset) -> str:
    """The word asked about: the fullest name of an instance ("Carlos Fuentes"), else the head word."""
    return max(s.words, key=len) if s.instance else s.words[0]


def question(s: Synset, person: bool, rng: random.Random) -> str:
    w = name(s)
    if person:
        forms = [f"Who was {w}?", f"who is {w}", f"Who was {w} and what is he or she known for?"]
    elif s.instance:
        forms = [f"What is {w}?", f"what is {w}", f"Tell me about {w}."]
    else:
        article = "an" if w[0].lower() in "aeiou" else "a"
        forms = [f"What is {article} {w}?", f"what is {w}", f"What does {w} mean?", f"Define {w}.", f"meaning of {w}"]
    return rng.choice(forms)


def build(
    synsets: dict[str, Synset], tagged: set[str], *, n: int, n_negatives: int, seed: int
) -> list[tuple[str, str, list[str]]]:
    """(question, positive offset, negative offsets) for ``n`` sampled nouns.

    Half are named entities (instances: people, places, works), half everyday nouns (seen in
    SemCor); taxonomic genus entries are left out.
    """
    rng = random.Random(seed)
    counts = sense_counts(synsets)
    children: dict[str, list[str]] = defaultdict(list)
    for s in synsets.values():
        for p in s.parents:
            children[p].append(s.offset)
    usable = [
        s
        for s in synsets.values()
        if counts[name(s).lower()] == 1
        and len(s.definition.split()) >= 4
        and name(s).lower() not in s.definition.lower()
        and sum(len(children[p]) - 1 for p in s.parents) >= 3
        and "genus" not in s.definition
    ]
    usable.sort(key=lambda s: s.offset)
    rng.shuffle(usable)
    named = [s for s in usable if s.instance]
    common = [s for s in usable if not s.instance and name(s).lower() in tagged]
    picked = named[: n // 2] + common[: n - min(n // 2, len(named))]
    rng.shuffle(picked)
    all_offsets = sorted(synsets)
    out = []
    for s in picked:
        # never the noun itself, nor a synset with the very same definition (a false negative)
        def wrong(x: str, s: Synset = s) -> bool:
            return synsets[x].definition != s.definition

        siblings = sorted({c for p in s.parents for c in children[p] if wrong(c)})
        negs = rng.sample(siblings, min(len(siblings), n_negatives - 2))
        negs += [p for p in s.parents[:1] if p not in negs and wrong(p)]
        while len(negs) < n_negatives:
            r = rng.choice(all_offsets)
            if wrong(r) and r not in negs:
                negs.append(r)
        out.append((question(s, s.instance and is_person(s.offset, synsets), rng), s.offset, negs))
    return out


def write_beir(rows: list[tuple[str, str, list[str]]], synsets: dict[str, Synset], out: Path) -> None:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    (out / "candidates").mkdir(exist_ok=True)
    used = sorted({o for _, pos, negs in rows for o in [pos, *negs]})
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for o in used:
            fh.write(json.dumps({"_id": f"wn-{o}", "title": "", "text": synsets[o].definition}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for i, (q, _, _) in enumerate(rows):
            fh.write(json.dumps({"_id": f"q{i}", "text": q}) + "\n")
    with (out / "qrels" / "train.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i, (_, pos, _) in enumerate(rows):
            fh.write(f"q{i}\twn-{pos}\t1\n")
    with (out / "candidates" / "train.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tlabel\n")
        for i, (_, pos, negs) in enumerate(rows):
            for o, label in [(pos, 1), *((x, 0) for x in negs)]:
                fh.write(f"q{i}\twn-{o}\t{label}\n")
    (out / "PROVENANCE.md").write_text(
        "Definition questions built from WordNet 3.0 nouns by benchmarks/wordnet_qa.py "
        f"({len(rows)} questions). WordNet 3.0 (c) Princeton University, free for any use under "
        "the WordNet license: https://wordnet.princeton.edu/license-and-commercial-use\n",
        encoding="utf-8",
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wordnet", type=Path, required=True, help="WordNet 3.0 dict folder (with data.noun)")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--n", type=int, default=2000, help="questions to build")
    ap.add_argument("--negatives", type=int, default=7)
    ap.add_argument("--seed", type=int, default=13)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.wordnet / "data.noun"
    if not data.is_file():
        raise SystemExit(f"{data} not found: point --wordnet at a WordNet 3.0 dict folder (Debian: wordnet-base)")
    synsets = parse_data_noun(data)
    tagged = tagged_lemmas(args.wordnet / "index.noun")
    rows = build(synsets, tagged, n=args.n, n_negatives=args.negatives, seed=args.seed)
    write_beir(rows, synsets, args.output)
    log.info("%d noun synsets -> %d questions in %s", len(synsets), len(rows), args.output)


if __name__ == "__main__":
    main()
