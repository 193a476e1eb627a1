"""Fitting an index prior to the code grids of a training set (training, not coding).

    training grids --count--> unigram p_uni (additive smoothing)
                   --cluster codes (co-occurrence k-means, or k-means of the codebook)-->
                   --count per context, back off to p_uni with alpha (cross-validated)-->
                   --quantize_probabilities--> IndexPrior (integer tables the coder uses)

:mod:`rawdiff.codec.entropy` codes with a prior; this module makes one (as CompressAI
keeps ``update()`` apart from ``compress()``), so the vehicle's coder carries none of it.

``"context"`` priors: the K codes are grouped into C clusters (default 16) so that a
table of (C+1)^2 x K probabilities stays small. Clusters come from the training grids
(information-theoretic k-means on the distributions of the codes that follow a code to
its right and below it, which minimises the cross-entropy of the successor given the
cluster; Dhillon et al. 2003) or from k-means on the codebook vectors. Each context's
counts are smoothed towards the unigram: ``p(x | ctx) = (n(ctx, x) + alpha p_uni(x)) /
(n(ctx) + alpha)``, with ``alpha`` picked by two-fold cross-validation on the grids.
Fitting is deterministic for a seed.
"""

from __future__ import annotations

from typing import Iterable, List, Optional, Union

import numpy as np

from rawdiff.codec.entropy import (
    ENTROPY_MODELS,
    MAX_CODES,
    GridLike,
    IndexPrior,
    as_grid_list,
    grid_contexts,
    parent_offsets,
    quantize_probabilities,
)

# co-occurrence clustering keeps at most this many (neighbour, successor) cells
_MAX_COOC_CELLS = 1 << 23


def fit_prior(grids: Union[GridLike, Iterable[GridLike]], codebook_size: int, kind: str = "context",
              num_clusters: int = 16, alpha: Optional[float] = None, additive: float = 0.5,
              codebook: Optional[np.ndarray] = None, seed: int = 0, parents: Optional[List[np.ndarray]] = None,
              parent_size: int = 0, parent_ratio: int = 1, parent_clusters: int = 8) -> IndexPrior:
    """Fit a prior to the index grids of a training set.

    Args:
        grids: a 2-D grid, an N x h x w stack, or an iterable of grids (sizes may differ).
        codebook_size: K, the codebook size.
        kind: ``"context"``, ``"unigram"`` or ``"uniform"``.
        num_clusters: C for the context kind.
        alpha: backoff weight of the unigram in every context; None: cross-validated.
        additive: pseudo-count of every code in the unigram (Laplace smoothing).
        codebook: K x D codebook vectors: cluster them with k-means instead of clustering
            the codes by co-occurrence.
        seed: seed of the clustering initialisation (fitting is deterministic for a seed).
        parents: (context kind) the previous stage's grid of every grid: its code at the same
            place becomes part of the context, grouped into ``parent_clusters`` clusters of the
            ``parent_size`` parent codes by what they say about the code below them.
        parent_ratio: cells of a grid along a parent cell's side (1, 2 or 4).
    """
    k = int(codebook_size)
    if not 2 <= k <= MAX_CODES:
        raise ValueError("codebook_size must be in [2, %d], got %d" % (MAX_CODES, k))
    if kind not in ENTROPY_MODELS:
        raise ValueError("kind %r is not one of %s" % (kind, ", ".join(ENTROPY_MODELS)))
    if kind == "uniform":
        return IndexPrior.uniform(k)
    if not additive > 0:
        raise ValueError("additive smoothing must be > 0, got %r" % additive)
    gl = as_grid_list(grids, k)
    counts = np.zeros(k, dtype=np.float64)
    for g in gl:
        counts += np.bincount(g.ravel(), minlength=k)
    p_uni = (counts + additive) / (counts.sum() + additive * k)
    if kind == "unigram":
        return IndexPrior(quantize_probabilities(p_uni), kind="unigram", smoothing=(float("nan"), additive))

    c = int(num_clusters)
    if c < 1 or c > 255:
        raise ValueError("num_clusters must be in [1, 255], got %d" % c)
    if codebook is not None:
        cb = np.asarray(codebook)
        if cb.ndim != 2 or cb.shape[0] != k:
            raise ValueError("codebook must be %d x D, got shape %s" % (k, cb.shape))
        cluster = cluster_codebook(cb, c, seed=seed)
    else:
        cluster = cluster_cooccurrence(gl, k, c, seed=seed)
    n_ctx = (c + 1) ** 2
    ctx = [grid_contexts(g, cluster, c).ravel() for g in gl]
    pcluster = None
    if parents is not None:
        pl = as_grid_list(parents, parent_size)
        if len(pl) != len(gl):
            raise ValueError("%d parent grids for %d grids" % (len(pl), len(gl)))
        pcluster = cluster_parents(gl, pl, k, parent_size, parent_ratio, parent_clusters, seed=seed)
        n_ctx *= int(pcluster.max()) + 1
        ctx = [cx + parent_offsets(g.shape, pg, pcluster, parent_ratio, c).ravel() for cx, g, pg in zip(ctx, gl, pl)]
    sym = [g.ravel() for g in gl]
    if alpha is None:
        alpha = _select_alpha(gl, ctx, sym, k, n_ctx, additive)
    if not alpha > 0:
        raise ValueError("alpha must be > 0, got %r" % alpha)
    table = np.zeros(n_ctx * k, dtype=np.float64)
    for cx, sx in zip(ctx, sym):
        table += np.bincount(cx * k + sx, minlength=n_ctx * k)
    table = table.reshape(n_ctx, k)
    probs = (table + alpha * p_uni[None]) / (table.sum(1, keepdims=True) + alpha)
    return IndexPrior(quantize_probabilities(probs), kind="context", cluster=cluster, num_clusters=c,
                      smoothing=(float(alpha), float(additive)), parent_cluster=pcluster, parent_ratio=parent_ratio)


def cluster_parents(grids: List[np.ndarray], parents: List[np.ndarray], codebook_size: int, parent_size: int,
                    ratio: int, num_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster the parent stage's codes by the distribution of the codes under them: the
    KL k-means of :func:`cluster_cooccurrence` on the counts n(parent code, code)."""
    m = np.zeros(parent_size * codebook_size, dtype=np.int64)
    for g, pg in zip(grids, parents):
        up = np.repeat(np.repeat(pg, ratio, axis=0), ratio, axis=1)[: g.shape[0], : g.shape[1]]
        if up.shape != g.shape:
            raise ValueError("parent grid %s does not cover a grid %s at ratio %d" % (pg.shape, g.shape, ratio))
        m += np.bincount((up * codebook_size + g).ravel(), minlength=m.size)
    cluster = np.zeros(parent_size, dtype=np.int32)
    counts = m.reshape(parent_size, codebook_size).astype(np.float64)
    return _kl_kmeans(counts, min(num_clusters, parent_size), cluster, seed)


def _kmeans_pp_init(x: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of k seeds chosen by k-means++ (first seed: the heaviest row)."""
    seeds = [int(np.argmax(weights))]
    d2 = ((x - x[seeds[0]]) ** 2).sum(1)
    for _ in range(1, k):
        score = d2 * weights
        total = score.sum()
        if total <= 0:
            rest = np.setdiff1d(np.arange(len(x)), seeds)
            seeds.append(int(rest[0]))
        else:
            seeds.append(int(rng.choice(len(x), p=score / total)))
        d2 = np.minimum(d2, ((x - x[seeds[-1]]) ** 2).sum(1))
    return np.asarray(seeds)


def cluster_codebook(codebook: np.ndarray, num_clusters: int, seed: int = 0, iters: int = 50) -> np.ndarray:
    """k-means of codebook vectors (K x D) -> cluster of every code (int32, K)."""
    x = np.asarray(codebook, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError("codebook must be K x D, got shape %s" % (x.shape,))
    k = min(num_clusters, len(x))
    rng = np.random.default_rng(seed)
    centers = x[_kmeans_pp_init(x, np.ones(len(x)), k, rng)]
    assign = np.zeros(len(x), dtype=np.int64)
    for it in range(iters):
        d = (x ** 2).sum(1)[:, None] - 2 * x @ centers.T + (centers ** 2).sum(1)[None]
        new = d.argmin(1)
        if it and np.array_equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = assign == j
            if members.any():
                centers[j] = x[members].mean(0)
    return assign.astype(np.int32)


def cluster_cooccurrence(grids: List[np.ndarray], codebook_size: int, num_clusters: int, seed: int = 0,
                         iters: int = 30) -> np.ndarray:
    """Cluster codes by what follows them (to the right and below) in the training grids.

    k-means with the KL divergence (Dhillon et al. 2003): every code a with successor
    counts n(a, .) goes to the cluster whose pooled successor distribution q_j maximises
    sum_x n(a, x) log q_j(x), i.e. the clusters minimise the cross-entropy of the
    successor given the cluster. Codes never seen as a neighbour join the heaviest cluster.
    """
    k_codes = codebook_size
    counts = np.zeros(k_codes, dtype=np.int64)
    for g in grids:
        counts += np.bincount(g.ravel(), minlength=k_codes)
    # successors beyond the s most frequent codes are pooled (bounds memory for large K)
    s = int(min(k_codes, max(64, _MAX_COOC_CELLS // (2 * k_codes))))
    if s < k_codes:
        order = np.argsort(-counts, kind="stable")
        rank = np.empty(k_codes, dtype=np.int64)
        rank[order] = np.arange(k_codes)
        succ = np.minimum(rank, s - 1)
    else:
        succ = np.arange(k_codes)
    cells = np.zeros(k_codes * 2 * s, dtype=np.int64)
    for g in grids:
        if g.shape[1] > 1:
            cells += np.bincount((g[:, :-1] * (2 * s) + succ[g[:, 1:]]).ravel(), minlength=cells.size)
        if g.shape[0] > 1:
            cells += np.bincount((g[:-1] * (2 * s) + s + succ[g[1:]]).ravel(), minlength=cells.size)
    m = cells.reshape(k_codes, 2 * s).astype(np.float64)
    del cells
    return _kl_kmeans(m, num_clusters, np.zeros(k_codes, dtype=np.int32), seed, iters)


def _kl_kmeans(m: np.ndarray, num_clusters: int, cluster: np.ndarray, seed: int, iters: int = 30) -> np.ndarray:
    """Cluster the rows of a count matrix (codes x outcomes) with the KL divergence (Dhillon
    et al. 2003): each code joins the cluster whose pooled outcome distribution gives its
    outcomes the highest likelihood. Codes without counts join the heaviest cluster;
    ``cluster`` (one entry per code) is filled in and returned."""
    mass = m.sum(1)
    active = np.flatnonzero(mass > 0)
    if len(active) <= num_clusters:
        cluster[active] = np.arange(len(active))
        return cluster
    a = m[active]
    w = mass[active]
    rng = np.random.default_rng(seed)
    hell = np.sqrt(a / w[:, None])
    seeds = _kmeans_pp_init(hell, w, num_clusters, rng)
    d = (hell ** 2).sum(1)[:, None] - 2 * hell @ hell[seeds].T + (hell[seeds] ** 2).sum(1)[None]
    assign = d.argmin(1)
    assign[seeds] = np.arange(num_clusters)
    eps = 1e-3
    for _ in range(iters):
        onehot = np.zeros((len(active), num_clusters))
        onehot[np.arange(len(active)), assign] = 1.0
        pooled = onehot.T @ a
        logq = np.log(pooled + eps) - np.log(pooled.sum(1, keepdims=True) + eps * a.shape[1])
        score = a @ logq.T
        new = score.argmax(1)
        # keep every cluster alive: an empty one takes the worst-fitting code
        used = np.bincount(new, minlength=num_clusters)
        if np.any(used == 0):
            fit = score[np.arange(len(new)), new] / w
            for j in np.flatnonzero(used == 0):
                movable = np.bincount(new, minlength=num_clusters)[new] > 1
                cand = np.flatnonzero(movable)
                worst = cand[np.argmin(fit[cand])]
                new[worst] = j
                fit[worst] = np.inf
        if np.array_equal(new, assign):
            break
        assign = new
    cluster[active] = assign
    heaviest = int(np.argmax(np.bincount(assign, weights=w, minlength=num_clusters)))
    inactive = np.ones(len(cluster), dtype=bool)
    inactive[active] = False
    cluster[inactive] = heaviest
    return cluster


def _select_alpha(grids: List[np.ndarray], ctx: List[np.ndarray], sym: List[np.ndarray], k: int,
                  n_ctx: int, additive: float) -> float:
    """Backoff weight by two-fold cross-validation (grids alternate folds; one grid: halves)."""
    if len(grids) >= 2:
        folds = [np.full(g.size, i % 2) for i, g in enumerate(grids)]
    else:
        g = grids[0]
        h, w = g.shape
        rows = np.arange(h)[:, None].repeat(w, 1)
        cols = np.arange(w)[None].repeat(h, 0)
        folds = [((rows >= h // 2) if h > 1 else (cols >= w // 2)).astype(np.int64).ravel()]
    ctx_all = np.concatenate(ctx)
    sym_all = np.concatenate(sym)
    fold_all = np.concatenate(folds)
    candidates = 2.0 ** np.arange(-2, 13)
    if fold_all.min() == fold_all.max():  # a single index: nothing to validate
        return 1.0
    loss = np.zeros(len(candidates))
    for train in (0, 1):
        tr, te = fold_all == train, fold_all != train
        table = np.bincount(ctx_all[tr] * k + sym_all[tr], minlength=n_ctx * k).astype(np.float64)
        row = table.reshape(n_ctx, k).sum(1)
        uni = np.bincount(sym_all[tr], minlength=k).astype(np.float64)
        uni = (uni + additive) / (uni.sum() + additive * k)
        n_cx = table[ctx_all[te] * k + sym_all[te]]
        n_c = row[ctx_all[te]]
        u = uni[sym_all[te]]
        for i, a in enumerate(candidates):
            loss[i] -= np.log((n_cx + a * u) / (n_c + a)).sum()
    return float(candidates[int(np.argmin(loss))])


__all__ = ["cluster_codebook", "cluster_cooccurrence", "fit_prior"]
