"""Session-aware autocompletion on the AOL log: MPC against XR-Linear over k-means, trie and hybrid trees.

Protocol (issue 4). Pairs and the time split come from experiments/qac_data.py: train = next query before
2006-05-01, test = the rest. Every test pair is asked at several typed-prefix lengths, one request per length
bucket its next query can fill: 1, 2, 3, 4 and 5 characters exactly, one length drawn uniformly from 6..8 and
one from 9..len (numpy seed 0), so the short prefixes where the methods differ most are all measured on the
same pairs. A request is correct when the exact (case-folded) next query is among the 10 completions.

- MRR@10 and success@10 pooled over requests, per bucket, for prefixes of 1-3 characters together, and overall
  (all requests pooled);
- populations: test pairs whose next query was seen in training (the targets), their subsets with and without
  a previous query (a session's first query has only the prefix to go on), and all test pairs (an unseen next
  query cannot be completed by any method here, so its requests count as misses without being run);
- BLEU of the top completion against the true query: sentence BLEU over whitespace tokens with n-gram orders
  1..min(4, reference length) (so an exact one-word completion scores 1, unlike NLTK's fixed 4-gram BLEU),
  smoothing "method1" (a zero n-gram match counts 0.1), brevity penalty; 0 when nothing is returned;
- latency per completion, one request at a time on one thread, the whole call incl. featurisation (mean, p50,
  p99 over every request of the seen population); training time per method.

Reference rows: "session counts + MPC" ranks the next queries that followed the same previous query in
training by that count, then MPC: what the session signal gives by counting alone. The oracle ranks the
requesting user's own training queries first: it reads the user id, which no method is given, and measures how
much of this log's predictability is "who is typing" (the co-user prior recovers part of it from the previous
query; a session's first query has nothing to recover it from). Settings were chosen with
``--validate`` (train before 2006-04-17, validate on the rest of April), never on the test period.

    .venv/bin/python -m experiments.qac_eval --libpecos      # ~10 min on 2 cores; writes results/qac_aol.*
    .venv/bin/python -m experiments.qac_eval --validate --methods kmeans --max-pairs 4000
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from experiments.qac_data import load_pairs, split_pairs
from experiments.report import log, publish
from xmr.qac.model import CompletionModel, normalize_label

RESULTS = Path(__file__).resolve().parent / "results" / "qac_aol.md"
VAL_START = "2006-04-17"
BUCKETS = ("1", "2", "3", "4", "5", "6-8", "9+")
METHODS = ("mpc", "session-counts", "user-oracle", "kmeans", "trie", "hybrid")
# per tree kind: CompletionModel.train options (chosen with --validate; see results/qac_aol_validation.md)
TRAIN = {"kmeans": {"index": "kmeans"}, "trie": {"index": "trie", "trie_depth": 5},
         "hybrid": {"index": "hybrid", "trie_depth": 2}}


def bucket_lengths(n: int, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(bucket, prefix length) requests for a next query of n characters (see the module docstring)."""
    out = [(b, int(b)) for b in BUCKETS[:5] if n >= int(b)]
    if n >= 6:
        out.append(("6-8", int(rng.integers(6, min(8, n) + 1))))
    if n >= 9:
        out.append(("9+", int(rng.integers(9, n + 1))))
    return out


def sentence_bleu(hypothesis: str, reference: str) -> float:
    """BLEU of one hypothesis against one reference (orders 1..min(4, |ref|), method1 smoothing, brevity)."""
    hyp, ref = hypothesis.split(), reference.split()
    if not hyp or not ref:
        return 0.0
    logs = []
    for n in range(1, min(4, len(ref)) + 1):
        h = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
        r = Counter(tuple(ref[i:i + n]) for i in range(len(ref) - n + 1))
        total = max(1, sum(h.values()))
        match = sum(min(c, r[g]) for g, c in h.items())
        logs.append(math.log((match if match else 0.1) / total))
    bp = 1.0 if len(hyp) >= len(ref) else math.exp(1 - len(ref) / len(hyp))
    return bp * math.exp(sum(logs) / len(logs))


def make_requests(test, seen: set[str]) -> tuple[list[tuple[str, str, str, str]], Counter, list[str]]:
    """(bucket, previous, prefix, target) requests of the seen test pairs, request counts of unseen ones, and the
    user of each request (for the oracle reference only)."""
    rng = np.random.default_rng(0)
    reqs, unseen, users = [], Counter(), []
    for p in test:
        q = normalize_label(p.query)
        if not q:
            continue
        for b, n in bucket_lengths(len(q), rng):
            if q in seen:
                reqs.append((b, normalize_label(p.previous), q[:n], q))
                users.append(p.user)
            else:
                unseen[b] += 1
    return reqs, unseen, users


def run(name: str, complete: Callable[[str, str], list[str]], reqs, unseen: Counter, train_s: float | None,
        extra_ms: np.ndarray | None = None) -> dict:
    """Ask every request one at a time; metrics per population and bucket, latency (plus ``extra_ms``: time
    spent on a request outside ``complete``, e.g. in a peer's process)."""
    rr = np.zeros(len(reqs))
    bleu = np.zeros(len(reqs))
    ms = np.zeros(len(reqs))
    for i, (_, prev, prefix, target) in enumerate(reqs):
        t0 = time.perf_counter()
        got = complete(prev, prefix)
        ms[i] = (time.perf_counter() - t0) * 1e3
        top = got[:10]
        if target in top:
            rr[i] = 1.0 / (top.index(target) + 1)
        bleu[i] = sentence_bleu(top[0], target) if top else 0.0
    if extra_ms is not None:
        ms += extra_ms
    bucket = np.array([r[0] for r in reqs])
    first = np.array([not r[1] for r in reqs])
    short = np.isin(bucket, BUCKETS[:3])

    def stats(mask: np.ndarray, extra: Counter | None = None) -> dict:
        out = {}
        for key, m, add in [("overall", mask, sum((extra or {}).values())),
                            ("1-3", mask & short, sum((extra or {}).get(b, 0) for b in BUCKETS[:3])),
                            *[(b, mask & (bucket == b), (extra or {}).get(b, 0)) for b in BUCKETS]]:
            n = int(m.sum()) + add
            out[key] = {"n": n, "mrr10": float(rr[m].sum() / n) if n else float("nan"),
                        "success10": float((rr[m] > 0).sum() / n) if n else float("nan"),
                        "bleu": float(bleu[m].sum() / n) if n else float("nan")}
        return out

    every = np.ones(len(reqs), dtype=bool)
    res = {"name": name, "seen": stats(every), "seen_with_previous": stats(~first), "seen_first": stats(first),
           "all": stats(every, unseen), "mean_ms": float(ms.mean()), "p50_ms": float(np.percentile(ms, 50)),
           "p99_ms": float(np.percentile(ms, 99)), "train_s": train_s,
           # requests with a previous query are the ones that reach the model
           "prev_p50_ms": float(np.percentile(ms[~first], 50)) if (~first).any() else float("nan"),
           "prev_p99_ms": float(np.percentile(ms[~first], 99)) if (~first).any() else float("nan")}
    s = res["seen"]
    log(f"[qac_eval] {name}: seen MRR@10 {s['overall']['mrr10']:.4f} (1-3 chars {s['1-3']['mrr10']:.4f}), "
        f"with previous {res['seen_with_previous']['overall']['mrr10']:.4f}, mean {res['mean_ms']:.3f} ms, "
        f"p99 {res['p99_ms']:.3f} ms")
    return res


def then_mpc(got: list[str], mpc, prefix: str) -> list[str]:
    """``got`` filled up to 10 with MPC's completions of ``prefix`` that it lacks (the reference rows' fallback)."""
    for q, _ in mpc.complete(prefix, 10):
        if len(got) == 10:
            break
        if q not in got:
            got.append(q)
    return got


def session_counts(train_pairs: Sequence[tuple[str, str]], mpc) -> Callable[[str, str], list[str]]:
    """Reference: next queries that followed the same previous query in training, by count, then MPC."""
    after: dict[str, Counter] = defaultdict(Counter)
    for prev, q in train_pairs:
        if prev:
            after[prev][q] += 1
    ranked = {prev: [q for q, _ in c.most_common()] for prev, c in after.items()}

    def complete(prev: str, prefix: str) -> list[str]:
        return then_mpc([q for q in ranked.get(prev, ()) if q.startswith(prefix)][:10], mpc, prefix)

    return complete


def user_oracle(train, mpc, users: Sequence[str]) -> Callable[[str, str], list[str]]:
    """Oracle reference: the requesting user's own training queries that start with the prefix, by count, then MPC.
    It reads the user id, which the service never gets: a measure of how much "who is typing" is worth here."""
    from xmr.qac.mpc import MostPopularCompletion

    own: dict[str, Counter] = defaultdict(Counter)
    for p in train:
        own[p.user][normalize_label(p.query)] += 1
    tables = {u: MostPopularCompletion(c) for u, c in own.items()}  # each user's own MPC
    who = iter(users)

    def complete(prev: str, prefix: str) -> list[str]:
        table = tables.get(next(who))
        return then_mpc([q for q, _ in table.complete(prefix, 10)] if table is not None else [], mpc, prefix)

    return complete


def libpecos_run(model: CompletionModel, train_pairs, reqs, args, work: Path) -> tuple[Callable, np.ndarray, dict]:
    """PECOS qp2q-style search on libpecos: its rankers trained over ``model``'s tree and features in the peers'
    venv, the whole tree searched per request, then the same prefix filter, MPC merge and prior as xmr's
    ``complete(constrained=False)``. Returns (complete function over ``reqs`` in order, extra ms per request,
    runner result)."""
    import subprocess

    import scipy.sparse as sp

    from experiments.peers.launch import child_env, python_for

    work.mkdir(parents=True, exist_ok=True)
    clean = [(p, q) for p, q in train_pairs if q]
    labels, prevs, prefixes, rows = CompletionModel.instances(clean, args.prefixes_per_pair, 0)
    assert labels == model.labels
    X = model.features.transform(prevs, prefixes)
    Y = sp.csr_matrix((np.ones(len(rows), np.float32), np.array(rows), np.arange(len(rows) + 1)),
                      shape=(len(rows), len(labels)))
    sp.save_npz(work / "X_train.npz", X)
    sp.save_npz(work / "Y_train.npz", Y)
    for t, C in enumerate(model.model.tree.to_chain()):
        sp.save_npz(work / f"C{t}.npz", C)
    asked = [i for i, r in enumerate(reqs) if r[1]]  # a first query never reaches the model
    feat_ms = np.zeros(len(reqs))
    qrows = []
    for i in asked:
        t0 = time.perf_counter()
        qrows.append(model.features.transform_one(reqs[i][1], reqs[i][2]))
        feat_ms[i] = (time.perf_counter() - t0) * 1e3
    Xq = sp.csr_matrix((np.concatenate([v for _, v in qrows]), np.concatenate([j for j, _ in qrows]),
                        np.concatenate([[0], np.cumsum([j.size for j, _ in qrows])])),
                       shape=(len(qrows), model.features.nr_features), dtype=np.float32)
    sp.save_npz(work / "Xq.npz", Xq)
    cmd = [python_for("libpecos-qac"), str(Path(__file__).resolve().parent / "peers" / "run_libpecos_qac.py"),
           "--data", str(work), "--out", str(work / "out"), "--threads", str(max(args.threads, 2)),
           "--candidates", str(model.candidates)]
    log(f"[qac_eval] libpecos: training and searching {len(asked):,} requests in the peers' venv")
    with open(work / "run.log", "w") as logf:
        subprocess.run(cmd, stdout=logf, stderr=subprocess.STDOUT, env=child_env(max(args.threads, 2)), check=True)
    with np.load(work / "out" / "ranked.npz") as z:
        ids, scores, pec_ms = z["ids"], z["scores"], z["ms"]
    result = json.loads((work / "out" / "result.json").read_text())
    extra = feat_ms.copy()
    extra[asked] += pec_ms
    slot = dict(zip(asked, range(len(asked))))
    counter = iter(range(len(reqs)))

    def complete(prev: str, prefix: str) -> list[str]:
        i = next(counter)
        if i not in slot:
            return [q for q, _ in model.complete(prev, prefix, 10, popularity=args.popularity,
                                                 co_user_weight=args.co_user_weight)]
        lo, hi = model.prefix_range(prefix)
        j = slot[i]
        keep = (ids[j] >= lo) & (ids[j] < hi)
        return [q for q, _ in model.rank_candidates(prefix, ids[j][keep], scores[j][keep], 10, args.popularity,
                                                    prev, args.co_user_weight)]

    return complete, extra, result


def plot(rows: list[dict], path: Path) -> None:
    """MRR@10 by prefix-length bucket, one line per method, for the seen pairs and their with-previous subset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, pop, title in [(axes[0], "seen", "next query seen in training"),
                           (axes[1], "seen_with_previous", "... and a previous query in the session")]:
        for r in rows:
            ax.plot(BUCKETS, [r[pop][b]["mrr10"] for b in BUCKETS], marker="o", label=r["name"])
        ax.set_title(title)
        ax.set_xlabel("typed prefix length (characters)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("MRR@10")
    axes[1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Session-aware autocompletion on AOL (aol_800_users, test from 2006-05-01)")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def render(rows: list[dict], info: dict) -> str:
    """The markdown report."""
    def table(pop: str, title: str) -> list[str]:
        head = "| method | overall | 1-3 chars | " + " | ".join(BUCKETS) + " | success@10 | BLEU top-1 |"
        lines = [f"**{title}** (MRR@10; {rows[0][pop]['overall']['n']:,} requests)", "", head,
                 "|" + "---|" * (head.count("|") - 1)]
        for r in rows:
            s = r[pop]
            lines.append(f"| {r['name']} | {s['overall']['mrr10']:.4f} | {s['1-3']['mrr10']:.4f} | "
                         + " | ".join(f"{s[b]['mrr10']:.3f}" for b in BUCKETS)
                         + f" | {s['overall']['success10']:.4f} | {s['overall']['bleu']:.4f} |")
        return lines + [""]

    mpc = rows[0]
    targets: list[str] = []
    hyb = next((r for r in rows if r["name"].startswith("XR-Linear, trie/k-means hybrid")), None)
    if hyb is not None:
        def gain(pop: str, key: str) -> float:
            return hyb[pop][key]["mrr10"] / mpc[pop][key]["mrr10"] - 1

        checks = [("hybrid vs MPC, MRR@10 on seen next queries, overall", gain("seen", "overall"), ">= +10%",
                   gain("seen", "overall") >= 0.10),
                  ("hybrid vs MPC, MRR@10 on seen next queries, prefixes of 1-3 characters", gain("seen", "1-3"),
                   ">= +33%", gain("seen", "1-3") >= 0.33)]
        targets = ["Issue 4 targets:", "", "| target | measured | wanted | |", "|---|---|---|---|"]
        targets += [f"| {name} | {v:+.1%} | {want} | {'met' if ok else 'MISSED'} |" for name, v, want, ok in checks]
        targets += [f"| hybrid p99 latency per completion | {hyb['p99_ms']:.3f} ms | < 5 ms | "
                    f"{'met' if hyb['p99_ms'] < 5 else 'MISSED'} |",
                    f"| (context) the same gains on requests with a previous query | {gain('seen_with_previous', 'overall'):+.1%}"
                    f" / {gain('seen_with_previous', '1-3'):+.1%} | | |", ""]
    peer = next((r["peer"] for r in rows if "peer" in r), None)
    peer_line = [] if peer is None else [
        f"libpecos {peer['version']} search alone (its `predict` per request, in its own process; the row's latency "
        f"adds xmr's featurisation and the same merge): p50 {peer['single_ms']['p50']:.3f} ms, p99 "
        f"{peer['single_ms']['p99']:.3f} ms over {peer['requests']:,} requests; peak training memory "
        f"{peer['peak_train_mb']:.0f} MB, model {peer['model_mb']:.1f} MB.", ""]
    gains = ["| method | seen overall | seen 1-3 chars | with previous overall | with previous 1-3 chars | "
             "mean ms | p50 / p99 ms | with previous p50 / p99 ms | train s |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        g = [r[pop][key]["mrr10"] / mpc[pop][key]["mrr10"] - 1
             for pop, key in [("seen", "overall"), ("seen", "1-3"), ("seen_with_previous", "overall"),
                              ("seen_with_previous", "1-3")]]
        gains.append(f"| {r['name']} | " + " | ".join(f"{v:+.1%}" for v in g)
                     + f" | {r['mean_ms']:.3f} | {r['p50_ms']:.3f} / {r['p99_ms']:.3f} | {r['prev_p50_ms']:.3f} / "
                     f"{r['prev_p99_ms']:.3f} | " + train_cell(r) + " |")
    return "\n".join([
        f"# Session-aware autocompletion on AOL: {info['title']}", "",
        f"Pairs: {info['train_pairs']:,} train ({info['labels']:,} distinct next queries = labels), "
        f"{info['test_pairs']:,} test, of which {info['seen_pairs']:,} have a next query seen in training "
        f"({info['seen_first']:,} of those are a session's first query, with no previous query). Requests: one per "
        "prefix-length bucket a next query can fill (1-5 exactly, one of 6-8, one of 9..len; seed 0). "
        f"Models: {info['settings']}. One run, 2-core shared machine, latency single request on one thread "
        "incl. featurisation. Protocol: experiments/qac_eval.py docstring.", "",
        "Gain in MRR@10 over MPC, latency per completion and training time:", "", *gains, "", *targets,
        *peer_line,
        *table("seen", "Test pairs whose next query was seen in training"),
        *table("seen_with_previous", "... with a previous query in the session"),
        *table("seen_first", "... a session's first query (prefix only)"),
        *table("all", "All test pairs (unseen next queries count as misses)"),
        f"Ceiling on the seen pairs if every request with a previous query were answered perfectly and first "
        f"queries stayed at MPC: overall {info['ceiling_overall']:+.1%}, 1-3 chars {info['ceiling_1_3']:+.1%} "
        "over MPC.", "", "![MRR@10 by prefix length](qac_aol.png)", ""])


def train_cell(r: dict) -> str:
    """Training seconds: total, and the tree + rankers part where known (a peer given the tree: rankers only)."""
    if r["train_s"] is None:
        return "-"
    if "xlinear_s" in r:
        return f"{r['train_s']:.1f} (tree + rankers {r['xlinear_s']:.1f})"
    return f"{r['train_s']:.1f}" + (" (rankers only)" if "peer" in r else "")


def ceiling(mpc: dict) -> tuple[float, float]:
    """Gain over MPC if with-previous requests scored 1 and first-query requests kept MPC's score."""
    out = []
    for key in ("overall", "1-3"):
        f, w, s = mpc["seen_first"][key], mpc["seen_with_previous"][key], mpc["seen"][key]
        out.append((f["mrr10"] * f["n"] + w["n"]) / s["n"] / s["mrr10"] - 1)
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    """Train each method, evaluate, publish."""
    ap = argparse.ArgumentParser(prog="python -m experiments.qac_eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list of %(default)s")
    ap.add_argument("--validate", action="store_true",
                    help=f"train before {VAL_START}, evaluate on the rest of April (tuning; never the test period)")
    ap.add_argument("--max-pairs", type=int, default=0, help="evaluate a random sample of this many test pairs")
    ap.add_argument("--prefixes-per-pair", type=int, default=6)
    ap.add_argument("--previous-weight", type=float, default=2.0)
    ap.add_argument("--popularity", type=float, default=None, help="prior exponent (default: the model's)")
    ap.add_argument("--co-user-weight", type=float, default=None,
                    help="co-user prior exponent (default: the model's)")
    ap.add_argument("--no-co-users", action="store_true", help="train without users (no co-user prior)")
    ap.add_argument("--first-query-model", action="store_true",
                    help="also use the model for a session's first query (default: MPC alone)")
    ap.add_argument("--trie-depth", type=int, default=None, help="override the trie/hybrid depth")
    ap.add_argument("--threads", type=int, default=-1)
    ap.add_argument("--libpecos", action="store_true",
                    help="also run libpecos (peers' venv) over the hybrid model's tree and features")
    ap.add_argument("--work", type=Path, default=Path(__file__).resolve().parent / ".cache" / "runs" / "qac",
                    help="scratch folder for the libpecos run (default %(default)s)")
    ap.add_argument("--out", type=Path, default=None, help=f"report path (default {RESULTS.name}, or "
                                                           "qac_aol_validation.md with --validate)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in METHODS for m in methods):
        ap.error(f"--methods: choose from {', '.join(METHODS)}")
    methods = ["mpc"] + [m for m in methods if m != "mpc"]  # every gain is relative to MPC

    train, test = split_pairs(load_pairs())
    if args.validate:
        train, test = split_pairs(train, VAL_START)
    if args.max_pairs:
        pick = np.random.default_rng(0).choice(len(test), size=min(args.max_pairs, len(test)), replace=False)
        test = [test[i] for i in np.sort(pick)]
    train_pairs = [(normalize_label(p.previous), normalize_label(p.query)) for p in train]
    users = None if args.no_co_users else [p.user for p in train]
    seen = {q for _, q in train_pairs}
    reqs, unseen, req_users = make_requests(test, seen)
    seen_pairs = [p for p in test if normalize_label(p.query) in seen]
    log(f"[qac_eval] {len(train_pairs):,} train pairs, {len(test):,} test pairs, {len(reqs):,} requests on seen "
        f"next queries, {sum(unseen.values()):,} on unseen ones")

    rows, models = [], {}
    mpc_table = None
    for m in [m for m in ("kmeans", "trie", "hybrid") if m in methods]:
        opts = dict(TRAIN[m])
        if args.trie_depth and m != "kmeans":
            opts["trie_depth"] = args.trie_depth
        t0 = time.perf_counter()
        model = CompletionModel.train(train_pairs, prefixes_per_pair=args.prefixes_per_pair, seed=0,
                                      previous_weight=args.previous_weight, users=users, threads=args.threads,
                                      **opts)
        models[m] = (model, time.perf_counter() - t0)
        model.warm()  # untimed: layouts and kernels ready before the first timed request, as after load()
        mpc_table = model.mpc
        log(f"[qac_eval] {m}: trained in {models[m][1]:.1f}s, level sizes {model.model.tree.level_sizes}")
    if mpc_table is None:
        from xmr.qac.mpc import MostPopularCompletion
        mpc_table = MostPopularCompletion(Counter(q for _, q in train_pairs))

    if "mpc" in methods:
        rows.append(run("MPC", lambda prev, p: [q for q, _ in mpc_table.complete(p, 10)], reqs, unseen, None))
    if "session-counts" in methods:
        rows.append(run("session counts + MPC", session_counts(train_pairs, mpc_table), reqs, unseen, None))
    if "user-oracle" in methods:
        rows.append(run("oracle: the user's own past queries + MPC (reads the user id)",
                        user_oracle(train, mpc_table, req_users), reqs, unseen, None))
    for m, (model, train_s) in models.items():
        def complete(prev: str, p: str, model=model) -> list[str]:
            if args.first_query_model and not prev:
                prev = "\x00"  # not blank but featureless: the model runs on the prefix alone
            return [q for q, _ in model.complete(prev, p, 10, popularity=args.popularity,
                                                 co_user_weight=args.co_user_weight)]

        label = {"kmeans": "XR-Linear, k-means tree", "trie": "XR-Linear, trie tree",
                 "hybrid": "XR-Linear, trie/k-means hybrid"}[m]
        rows.append(run(f"{label} {tuple(model.model.tree.level_sizes)}", complete, reqs, unseen, train_s))
        rows[-1]["xlinear_s"] = model.meta["times"]["xlinear_s"]
    if "hybrid" in models:  # ablations on the same trained model
        model = models["hybrid"][0]
        rows.append(run("hybrid, beam unconstrained + filter (PECOS-style ablation)", lambda prev, p: [
            q for q, _ in model.complete(prev, p, 10, popularity=args.popularity, constrained=False,
                                         co_user_weight=args.co_user_weight)], reqs, unseen, None))
        rows.append(run("hybrid, no popularity prior (ablation)", lambda prev, p: [
            q for q, _ in model.complete(prev, p, 10, popularity=0.0, co_user_weight=args.co_user_weight)],
            reqs, unseen, None))
        if model.co_users is not None:
            rows.append(run("hybrid, no co-user prior (ablation)", lambda prev, p: [
                q for q, _ in model.complete(prev, p, 10, popularity=args.popularity, co_user_weight=0.0)],
                reqs, unseen, None))
        if args.libpecos:
            fn, extra, res = libpecos_run(model, train_pairs, reqs, args, args.work / "libpecos-qac")
            rows.append(run(f"libpecos {res['version']}, same tree and features, unconstrained beam + filter", fn,
                            reqs, unseen, res["train_s"], extra))
            rows[-1]["peer"] = res

    first = sum(1 for p in seen_pairs if not p.previous)
    settings = (f"{args.prefixes_per_pair} prefixes per training pair, previous-query weight "
                f"{args.previous_weight:g}, popularity exponent "
                f"{args.popularity if args.popularity is not None else 'default'}, co-user prior "
                f"{'off' if args.no_co_users else 'exponent ' + str(args.co_user_weight or 'default')}, "
                "100 candidates, beam 10; "
                + "; ".join(f"{m}: {TRAIN[m]}" for m in models))
    info = {"title": "validation (train before 2006-04-17, validate 04-17..04-30)" if args.validate
            else "MPC vs XR-Linear over three label trees", "train_pairs": len(train_pairs),
            "labels": len(seen), "test_pairs": len(test), "seen_pairs": len(seen_pairs), "seen_first": first,
            "settings": settings}
    failures = []
    if rows and rows[0]["name"] == "MPC":
        info["ceiling_overall"], info["ceiling_1_3"] = ceiling(rows[0])
    else:
        info["ceiling_overall"] = info["ceiling_1_3"] = float("nan")
    out = args.out or (RESULTS.with_name("qac_aol_validation.md") if args.validate else RESULTS)
    report = render(rows, info)
    if not args.validate and rows:
        plot(rows, out.with_suffix(".png"))
    payload = {"info": info, "rows": rows, "argv": argv if argv is not None else sys.argv[1:]}
    return publish(out, report, payload, failures, "qac_eval")


if __name__ == "__main__":
    sys.exit(main())
