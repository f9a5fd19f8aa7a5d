"""Retrieval quality and latency, side by side: vector-only, BM25-only and hybrid (RRF).

Quality: the hand-labelled stdlib questions in ``bench/data/retrieval_questions.jsonl`` against the
pydoc stdlib index (built or refreshed incrementally in ``--index-path``). A retrieved chunk answers
a question when its ``symbol`` is one of the labelled answers, or a method of a labelled class.
Latency: p50/p95 per query on a synthetic index of ``--latency-chunks`` chunks (real stdlib chunk
texts repeated with variations, random unit vectors), with and without the query embedding.

    python bench/retrieval_bench.py [--index-path P] [--latency-chunks 20000] [--skip-latency]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.embeddings import Embeddings

QUESTIONS = Path(__file__).parent / "data" / "retrieval_questions.jsonl"
MODES = ("vector", "bm25", "hybrid")
TARGET_RECALL_AT_5 = 0.85
TARGET_P50_MS = 20.0


@dataclass
class Quality:
    mode: str
    recall_at_1: float
    recall_at_5: float
    mrr_at_10: float
    misses_at_5: list[str]


def _answers(symbol: str, answers: list[str]) -> bool:
    return any(symbol == a or symbol.startswith(a + ".") for a in answers)


def evaluate(index_path: Path, embeddings: Embeddings, questions: list[dict]) -> list[Quality]:
    from chains.retriever import open_retriever

    results = []
    for mode in MODES:
        retriever = open_retriever(index_path, k=10, mode=mode, embeddings=embeddings)  # type: ignore[arg-type]
        hits_1 = hits_5 = 0
        reciprocal_ranks, misses = [], []
        for item in questions:
            symbols = [d.metadata["symbol"] for d in retriever.invoke(item["question"])]
            rank = next((i + 1 for i, s in enumerate(symbols) if _answers(s, item["answers"])), None)
            hits_1 += rank == 1
            hits_5 += rank is not None and rank <= 5
            reciprocal_ranks.append(1.0 / rank if rank else 0.0)
            if not rank or rank > 5:
                misses.append(f"{item['question']!r}: wanted {item['answers'][0]}, got {symbols[:3]}")
        n = len(questions)
        results.append(Quality(mode, hits_1 / n, hits_5 / n, sum(reciprocal_ranks) / n, misses))
    return results


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _CachedQueryEmbeddings(Embeddings):
    """Wraps an embedder so repeated queries skip the model: isolates the search cost."""

    def __init__(self, inner: Embeddings) -> None:
        self.inner, self.cache = inner, {}
        self.model_name = getattr(inner, "model_name", "cached")

    def embed_query(self, text: str) -> list[float]:
        if text not in self.cache:
            self.cache[text] = self.inner.embed_query(text)
        return self.cache[text]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts)


def latency(
    source_index: Path, embeddings: Embeddings, questions: list[dict], n_chunks: int
) -> dict[str, dict]:
    """Per-query latency on an index of ``n_chunks`` synthetic chunks, by mode."""
    import numpy as np

    from chains.indexing import get_client, open_collection
    from chains.retriever import CodeDocRetriever, _lexical_index

    source = open_collection(source_index, None, create=False)
    assert source is not None
    got = source.get(include=["documents", "metadatas"])
    rng = random.Random(0)
    vocabulary = [w for text in got["documents"][:500] for w in text.split()[:30]]
    workdir = Path(tempfile.mkdtemp(prefix="ragcoder-latency-"))
    cached = _CachedQueryEmbeddings(embeddings)
    collection = open_collection(workdir, cached, create=True)
    assert collection is not None
    dims = len(embeddings.embed_query("dimension probe"))
    generator = np.random.default_rng(0)
    batch = get_client(workdir).get_max_batch_size()
    for start in range(0, n_chunks, batch):
        count = min(batch, n_chunks - start)
        vectors = generator.normal(size=(count, dims)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids, documents, metadatas = [], [], []
        for i in range(start, start + count):
            base = i % len(got["ids"])
            extra = " ".join(rng.choice(vocabulary) for _ in range(8))
            ids.append(f"synthetic-{i}")
            documents.append(f"{got['documents'][base]}\n{extra}")
            metadatas.append(
                {**got["metadatas"][base], "source": f"synthetic/{i // 50}", "corpus": "synthetic"}
            )
        collection.add(ids=ids, documents=documents, metadatas=metadatas, embeddings=vectors)
    from chains.indexing import _bump_generation

    _bump_generation(workdir)
    queries = [q["question"] for q in questions]
    report: dict[str, dict] = {"chunks": {"count": collection.count()}}
    started = time.perf_counter()
    lexical = _lexical_index(collection, workdir, "ragcoder")
    report["chunks"]["bm25_build_s"] = round(time.perf_counter() - started, 2)
    timings = []
    for query in queries:
        t0 = time.perf_counter()
        lexical.bm25.search(query, 30)
        timings.append((time.perf_counter() - t0) * 1000)
    report["bm25 scoring only"] = {"p50_ms": _percentile(timings, 0.5), "p95_ms": _percentile(timings, 0.95)}
    for label, embedder in (
        ("search (query vector cached)", cached),
        ("end to end (embeds query)", embeddings),
    ):
        for mode in MODES:
            retriever = CodeDocRetriever(index_path=str(workdir), k=5, mode=mode, embeddings=embedder)  # type: ignore[arg-type]
            for query in queries[:5]:
                retriever.invoke(query)  # warm: model, BM25 cache, query-vector cache
            if embedder is cached:
                for query in queries:
                    cached.embed_query(query)
            timings = []
            for query in queries:
                t0 = time.perf_counter()
                retriever.invoke(query)
                timings.append((time.perf_counter() - t0) * 1000)
            report[f"{mode}: {label}"] = {
                "p50_ms": _percentile(timings, 0.5),
                "p95_ms": _percentile(timings, 0.95),
            }
    return report


def main() -> None:
    from chains.paths import data_dir

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--index-path", type=Path, default=data_dir() / "bench-stdlib-index")
    parser.add_argument("--latency-chunks", type=int, default=20_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args()

    from chains.embeddings import load_embeddings
    from chains.indexing import index_stdlib

    questions = [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]
    embeddings = load_embeddings()
    stats = index_stdlib(index_path=args.index_path, embeddings=embeddings, progress=True)
    print(f"index: {stats.summary()}")
    quality = evaluate(args.index_path, embeddings, questions)
    print(f"\nRetrieval quality on {len(questions)} labelled stdlib questions (k=10 retrieved)")
    print(f"{'mode':<8} {'recall@1':>9} {'recall@5':>9} {'MRR@10':>8}")
    for q in quality:
        print(f"{q.mode:<8} {q.recall_at_1:>9.3f} {q.recall_at_5:>9.3f} {q.mrr_at_10:>8.3f}")
    by_mode = {q.mode: q for q in quality}
    hybrid = by_mode["hybrid"]
    for other in ("vector", "bm25"):
        ratio = hybrid.recall_at_5 / max(by_mode[other].recall_at_5, 1e-9)
        print(
            f"hybrid / {other} recall@5 = {ratio:.2f}x; MRR {hybrid.mrr_at_10 / max(by_mode[other].mrr_at_10, 1e-9):.2f}x"
        )
    beats = all(hybrid.recall_at_5 > by_mode[m].recall_at_5 for m in ("vector", "bm25"))
    print(f"target hybrid recall@5 >= {TARGET_RECALL_AT_5} and above both: "
          f"{'MET' if hybrid.recall_at_5 >= TARGET_RECALL_AT_5 and beats else 'NOT MET'}")  # fmt: skip
    if args.show_misses:
        for q in quality:
            print(f"\n{q.mode} misses@5 ({len(q.misses_at_5)}):")
            for miss in q.misses_at_5:
                print(f"  {miss}")
    if args.skip_latency:
        return
    report = latency(args.index_path, embeddings, questions, args.latency_chunks)
    print(
        f"\nQuery latency on {report['chunks']['count']} chunks (BM25 index built in {report['chunks']['bm25_build_s']} s)"
    )
    print(f"{'what':<44} {'p50 ms':>8} {'p95 ms':>8}")
    for name, row in report.items():
        if name != "chunks":
            print(f"{name:<44} {row['p50_ms']:>8.2f} {row['p95_ms']:>8.2f}")
    hybrid_search = report["hybrid: search (query vector cached)"]["p50_ms"]
    print(
        f"target hybrid p50 <= {TARGET_P50_MS} ms (search): {'MET' if hybrid_search <= TARGET_P50_MS else 'NOT MET'}"
    )


if __name__ == "__main__":
    main()
