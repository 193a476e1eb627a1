/* The adaptive range coder of rawdiff.codec.adaptive, compiled (the same bytes as its Python
 * reference, rawdiff.codec.adaptive.encode_reference / decode_reference).
 *
 * Model: the index at raster position i has a context c (a row of the prior's integer table
 * f_c, summing to 2**24) and, for a stage with a parent, a parent p (the previous stage's code
 * at the same place); it is coded with the weights
 *
 *     w(x) = f_c(x) << W + n_c(x) << (W + s) + [level] n_p(x) << (W - a + s)
 *            + [pool] n(x) << (W - b + s),                                       s = 24 - e
 *
 * where n_c(x) counts the x already coded in context c of this grid, n_p(x) under parent p
 * (the parent level, when m > 0: a = m - 1), n(x) in the whole grid (the pool, when g > 0:
 * b = g - 1; a <= b when both are used), W = b with the pool, else a with the parent level,
 * else 0; the total is the sum of the weights: the table with a Dirichlet of strength 2**e,
 * updated with the context's own counts, the parent's weighted 2**-a and the grid's weighted
 * 2**-b. With aging h > 0 (format version 9) a context's and a parent's counts are halved
 * (each rounded down) whenever they reach 2**(h + 3) indices, the pool's at 2**(h + 7), so
 * what the coder learnt lately weighs more than what it learnt at the top of the frame;
 * without aging a context and a parent stop counting at COUNT_CAP indices, the pool at
 * POOL_CAP. Either way the total stays below 2**50.
 *
 * Range coder: 64-bit range kept in [2**56, 2**64) by shifting out bytes, 64-bit low with the
 * carry propagated into the bytes already written; r = range / total >= 2**6, and the coder
 * loses at most total / range of a symbol's interval (below 2**-10 for e >= 4). The end writes
 * the one byte that puts the value in the final interval on a multiple of 2**56; trailing
 * zero bytes are dropped (the decoder reads zeros past the end).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION 24
#define TOTAL ((uint64_t)1 << PRECISION)
#define BOTTOM ((uint64_t)1 << 56)
#define COUNT_CAP 65536u
#define POOL_CAP 1048576u
#define MAX_POOL 9 /* g: 0 (no pool) or b + 1 with b in 0..8; m likewise for the parent level */
#define MAX_AGING 12 /* h: 0 (no aging) or halving at 2**(h + 3) (contexts, parents), 2**(h + 7) (pool) */
/* with any aging the counts halve before they reach the caps (the reference's estimate ignores them then) */
_Static_assert((1u << (MAX_AGING + 3)) <= COUNT_CAP && (1u << (MAX_AGING + 7)) <= POOL_CAP,
               "aging thresholds above the caps");
#define MAX_CODES 65536

typedef struct {
    uint32_t *counts; /* K */
    uint32_t *tree;   /* Fenwick tree over counts, 1-based, K + 1 */
    uint32_t seen;
} Context;

typedef struct {
    int k;
    int table_shift;   /* W */
    int context_shift; /* W + s */
    int parent_shift;  /* W - a + s */
    int pool_shift;    /* W - b + s */
    int pooled;        /* whether the grid's counts are added */
    int parented;      /* whether the parents' counts are added */
    int no_trees;      /* counts only (estimate: no interval is needed) */
    uint32_t halve_at, pool_halve_at; /* aging: halve a level's counts at this many (0: never) */
    Py_ssize_t num_contexts, num_parents;
    const uint32_t *cum; /* num_contexts x (K + 1): the tables' cumulative sums */
    Context *ctx;
    Context *par; /* num_parents, with the parent level */
    Context pool;
} Model;

static int counts_alloc(Context *c, int k, int trees) {
    c->counts = (uint32_t *)calloc((size_t)k, sizeof(uint32_t));
    c->tree = trees ? (uint32_t *)calloc((size_t)k + 1, sizeof(uint32_t)) : NULL;
    return c->counts && (c->tree || !trees);
}

/* trees: 0 for counts only (estimate: no interval is needed); level: m (0: no parent level) */
static int model_init(Model *m, const uint32_t *cum, Py_ssize_t num_contexts, Py_ssize_t num_parents, int k,
                      int strength, int pool, int level, int aging, int trees) {
    memset(m, 0, sizeof(*m));
    m->halve_at = aging ? (uint32_t)1 << (aging + 3) : 0;
    m->pool_halve_at = aging ? (uint32_t)1 << (aging + 7) : 0;
    int s = PRECISION - strength, w = pool > 0 ? pool - 1 : level > 0 ? level - 1 : 0;
    m->no_trees = !trees;
    m->k = k;
    m->table_shift = w;
    m->context_shift = w + s;
    m->parent_shift = level > 0 ? w - (level - 1) + s : 0;
    m->pool_shift = pool > 0 ? w - (pool - 1) + s : 0;
    m->pooled = pool > 0;
    m->parented = level > 0;
    m->num_contexts = num_contexts;
    m->num_parents = level > 0 ? num_parents : 0;
    m->cum = cum;
    m->ctx = (Context *)calloc((size_t)num_contexts, sizeof(Context));
    if (!m->ctx) return 0;
    if (m->parented && !(m->par = (Context *)calloc((size_t)num_parents, sizeof(Context)))) return 0;
    return !m->pooled || counts_alloc(&m->pool, k, trees);
}

static void contexts_free(Context *c, Py_ssize_t n) {
    for (Py_ssize_t i = 0; c && i < n; i++) {
        free(c[i].counts);
        free(c[i].tree);
    }
    free(c);
}

static void model_free(Model *m) {
    contexts_free(m->ctx, m->num_contexts);
    contexts_free(m->par, m->num_parents);
    m->ctx = m->par = NULL;
    free(m->pool.counts);
    free(m->pool.tree);
    m->pool.counts = m->pool.tree = NULL;
}

static uint64_t prefix(const Context *c, int x) {
    uint64_t s = 0;
    for (int i = x; i > 0; i -= i & -i) s += c->tree[i];
    return s;
}

static void add(Context *c, int k, int x, int trees) {
    c->counts[x] += 1;
    if (trees)
        for (int i = x + 1; i <= k; i += i & -i) c->tree[i] += 1;
    c->seen += 1;
}

/* every count halved, rounded down (aging), and the tree built again from them */
static void halve(Context *c, int k, int trees) {
    uint32_t seen = 0;
    for (int x = 0; x < k; x++) seen += (c->counts[x] >>= 1);
    c->seen = seen;
    if (!trees) return;
    for (int i = 1; i <= k; i++) c->tree[i] = c->counts[i - 1];
    for (int i = 1; i <= k; i++) {
        int j = i + (i & -i);
        if (j <= k) c->tree[j] += c->tree[i];
    }
}

/* half: the aging's threshold (0: none; then cap stops the counting) */
static int count(Context *c, int k, int x, uint32_t cap, uint32_t half, int trees) {
    if (c->seen >= cap) return 0;
    if (!c->counts && !counts_alloc(c, k, trees)) return -1;
    add(c, k, x, trees);
    if (half && c->seen >= half) halve(c, k, trees);
    return 0;
}

/* 0 on success, -1 when out of memory; pi: the parent (ignored without the parent level) */
static int update(Model *m, Py_ssize_t ci, Py_ssize_t pi, int x) {
    int trees = !m->no_trees;
    if (count(&m->ctx[ci], m->k, x, COUNT_CAP, m->halve_at, trees)) return -1;
    if (m->parented && count(&m->par[pi], m->k, x, COUNT_CAP, m->halve_at, trees)) return -1;
    return m->pooled ? count(&m->pool, m->k, x, POOL_CAP, m->pool_halve_at, trees) : 0;
}

/* where the interval of x starts in context ci under parent pi */
static uint64_t start_of(const Model *m, Py_ssize_t ci, Py_ssize_t pi, int x) {
    const uint32_t *row = m->cum + (size_t)ci * (size_t)(m->k + 1);
    const Context *c = &m->ctx[ci];
    uint64_t start = (uint64_t)row[x] << m->table_shift;
    if (c->seen) start += prefix(c, x) << m->context_shift;
    if (m->parented && m->par[pi].seen) start += prefix(&m->par[pi], x) << m->parent_shift;
    if (m->pooled && m->pool.seen) start += prefix(&m->pool, x) << m->pool_shift;
    return start;
}

static uint64_t total_of(const Model *m, Py_ssize_t ci, Py_ssize_t pi) {
    uint64_t total = TOTAL << m->table_shift;
    total += (uint64_t)m->ctx[ci].seen << m->context_shift;
    if (m->parented) total += (uint64_t)m->par[pi].seen << m->parent_shift;
    if (m->pooled) total += (uint64_t)m->pool.seen << m->pool_shift;
    return total;
}

static uint64_t width_of(const Model *m, Py_ssize_t ci, Py_ssize_t pi, int x) {
    const uint32_t *row = m->cum + (size_t)ci * (size_t)(m->k + 1);
    const Context *c = &m->ctx[ci];
    uint64_t width = ((uint64_t)row[x + 1] - row[x]) << m->table_shift;
    if (c->seen) width += (uint64_t)c->counts[x] << m->context_shift;
    if (m->parented && m->par[pi].seen) width += (uint64_t)m->par[pi].counts[x] << m->parent_shift;
    if (m->pooled && m->pool.seen) width += (uint64_t)m->pool.counts[x] << m->pool_shift;
    return width;
}

/* ------------------------------------------------------------------ encoder */

typedef struct {
    uint8_t *buf;
    size_t len, cap;
    uint64_t low, range;
} Encoder;

static int put_byte(Encoder *e, uint8_t b) {
    if (e->len == e->cap) {
        size_t cap = e->cap ? 2 * e->cap : 4096;
        uint8_t *nb = (uint8_t *)realloc(e->buf, cap);
        if (!nb) return -1;
        e->buf = nb;
        e->cap = cap;
    }
    e->buf[e->len++] = b;
    return 0;
}

static void carry(Encoder *e) {
    size_t i = e->len;
    while (i > 0 && e->buf[i - 1] == 0xFF) e->buf[--i] = 0;
    if (i > 0) e->buf[i - 1] += 1; /* i == 0 cannot happen: the value stays below 2**64 */
}

static void add_low(Encoder *e, uint64_t add) {
    uint64_t nl = e->low + add;
    if (nl < e->low) carry(e);
    e->low = nl;
}

static int encode_one(Encoder *e, uint64_t start, uint64_t width, uint64_t total) {
    uint64_t r = e->range / total;
    add_low(e, r * start);
    e->range = r * width;
    while (e->range < BOTTOM) {
        if (put_byte(e, (uint8_t)(e->low >> 56))) return -1;
        e->low <<= 8;
        e->range <<= 8;
    }
    return 0;
}

static int encoder_finish(Encoder *e) {
    add_low(e, BOTTOM - 1);
    if (put_byte(e, (uint8_t)(e->low >> 56))) return -1;
    while (e->len && e->buf[e->len - 1] == 0) e->len--;
    return 0;
}

static int get_buffer(PyObject *obj, Py_buffer *view, Py_ssize_t itemsize, const char *what) {
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS) < 0) return -1;
    if (view->len % itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes is not a whole number of %zd-byte items", what, view->len,
                     itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int check_model_args(Py_ssize_t cum_len, Py_ssize_t num_contexts, int k, int strength, int pool, int level,
                            int aging, Py_ssize_t parents_len, Py_ssize_t n, Py_ssize_t num_parents) {
    if (k < 2 || k > MAX_CODES) {
        PyErr_Format(PyExc_ValueError, "codebook size %d is not in [2, %d]", k, MAX_CODES);
        return -1;
    }
    if (strength < 0 || strength > PRECISION) {
        PyErr_Format(PyExc_ValueError, "strength exponent %d is not in [0, %d]", strength, PRECISION);
        return -1;
    }
    if (pool < 0 || pool > MAX_POOL) {
        PyErr_Format(PyExc_ValueError, "pool weight %d is not in [0, %d]", pool, MAX_POOL);
        return -1;
    }
    if (level < 0 || level > MAX_POOL) {
        PyErr_Format(PyExc_ValueError, "parent level %d is not in [0, %d]", level, MAX_POOL);
        return -1;
    }
    if (pool && level > pool) {
        PyErr_Format(PyExc_ValueError, "parent level %d is above the pool weight %d", level, pool);
        return -1;
    }
    if (aging < 0 || aging > MAX_AGING) {
        PyErr_Format(PyExc_ValueError, "aging %d is not in [0, %d]", aging, MAX_AGING);
        return -1;
    }
    if (level && (num_parents < 1 || num_parents > MAX_CODES || parents_len != n * 4)) {
        PyErr_SetString(PyExc_ValueError, "the parent level needs one int32 parent per index, of 1 to 65536 parents");
        return -1;
    }
    if (num_contexts < 1 || num_contexts > PY_SSIZE_T_MAX / 4 / (k + 1) ||
        cum_len != num_contexts * (Py_ssize_t)(k + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "cumulative tables must be num_contexts x (K + 1) uint32");
        return -1;
    }
    return 0;
}

/* What encode and estimate share: symbols, contexts and parents (int32, one per symbol;
 * parents empty without the parent level) and the cumulative tables, held until coding_close,
 * and the model of their counts. */
typedef struct {
    Py_buffer sv, cv, pv, cumv;
    int held; /* buffers acquired */
    Py_ssize_t n;
    const int32_t *sym, *ctx, *par;
    Model m;
} Coding;

/* 0 with every buffer held and the model made (trees: see model_init), -1 with none held and
 * an exception set */
static int coding_open(Coding *cd, PyObject *so, PyObject *co, PyObject *po, PyObject *cumo, Py_ssize_t num_contexts,
                       Py_ssize_t num_parents, int k, int strength, int pool, int level, int aging, int trees) {
    memset(&cd->m, 0, sizeof(cd->m));
    cd->held = 0;
    if (get_buffer(so, &cd->sv, 4, "symbols")) return -1;
    cd->held = 1;
    if (get_buffer(co, &cd->cv, 4, "contexts")) goto fail;
    cd->held = 2;
    if (get_buffer(po, &cd->pv, 4, "parents")) goto fail;
    cd->held = 3;
    if (get_buffer(cumo, &cd->cumv, 4, "tables")) goto fail;
    cd->held = 4;
    cd->n = cd->sv.len / 4;
    if (check_model_args(cd->cumv.len, num_contexts, k, strength, pool, level, aging, cd->pv.len, cd->n, num_parents))
        goto fail;
    if (cd->cv.len != cd->sv.len) {
        PyErr_SetString(PyExc_ValueError, "one context per symbol");
        goto fail;
    }
    cd->sym = (const int32_t *)cd->sv.buf;
    cd->ctx = (const int32_t *)cd->cv.buf;
    cd->par = level ? (const int32_t *)cd->pv.buf : NULL;
    if (!model_init(&cd->m, (const uint32_t *)cd->cumv.buf, num_contexts, num_parents, k, strength, pool, level,
                    aging, trees)) {
        model_free(&cd->m);
        PyErr_NoMemory();
        goto fail;
    }
    return 0;
fail:
    if (cd->held >= 4) PyBuffer_Release(&cd->cumv);
    if (cd->held >= 3) PyBuffer_Release(&cd->pv);
    if (cd->held >= 2) PyBuffer_Release(&cd->cv);
    PyBuffer_Release(&cd->sv);
    cd->held = 0;
    return -1;
}

static void coding_close(Coding *cd) {
    if (!cd->held) return;
    model_free(&cd->m);
    PyBuffer_Release(&cd->sv);
    PyBuffer_Release(&cd->cv);
    PyBuffer_Release(&cd->pv);
    PyBuffer_Release(&cd->cumv);
    cd->held = 0;
}

/* index i's symbol, context and parent (0 without the parent level): 0, or -1 when one is out
 * of the model's range */
static int coding_at(const Coding *cd, Py_ssize_t i, int *x, Py_ssize_t *c, Py_ssize_t *p) {
    *x = cd->sym[i];
    *c = cd->ctx[i];
    *p = cd->par ? cd->par[i] : 0;
    if (*x < 0 || *x >= cd->m.k || *c < 0 || *c >= cd->m.num_contexts) return -1;
    return cd->par && (*p < 0 || *p >= cd->m.num_parents) ? -1 : 0;
}

/* encode(symbols int32[n], contexts int32[n], parents int32[n] or b"", cum uint32[C x (K+1)], num_contexts,
 *        num_parents, K, e, g, m, h) -> bytes */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *so, *co, *po, *cumo;
    Py_ssize_t num_contexts, num_parents;
    int k, strength, pool, level, aging;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOnniiiii", &so, &co, &po, &cumo, &num_contexts, &num_parents, &k, &strength, &pool,
                          &level, &aging))
        return NULL;
    Coding cd;
    if (coding_open(&cd, so, co, po, cumo, num_contexts, num_parents, k, strength, pool, level, aging, 1)) return NULL;
    PyObject *result = NULL;
    Model *m = &cd.m;
    Encoder e = {NULL, 0, 0, 0, UINT64_MAX};
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < cd.n; i++) {
        int x;
        Py_ssize_t c, p;
        if (coding_at(&cd, i, &x, &c, &p)) {
            failed = 2;
            break;
        }
        uint64_t width = width_of(m, c, p, x);
        if (!width) { /* a table entry of 0: refused by rawdiff.codec.adaptive.cumulative */
            failed = 2;
            break;
        }
        if (encode_one(&e, start_of(m, c, p, x), width, total_of(m, c, p)) || update(m, c, p, x)) {
            failed = 1;
            break;
        }
    }
    if (!failed && encoder_finish(&e)) failed = 1;
    Py_END_ALLOW_THREADS
    if (failed == 1)
        PyErr_NoMemory();
    else if (failed == 2)
        PyErr_SetString(PyExc_ValueError, "a symbol, context or parent is out of range, or a table entry is 0");
    else
        result = PyBytes_FromStringAndSize((const char *)e.buf, (Py_ssize_t)e.len);
    free(e.buf);
    coding_close(&cd);
    return result;
}

/* ------------------------------------------------------------------ decoder */

/* decode(data, h, w, offsets int32[h*w] or b"", cluster int32[K] or b"", num_clusters, parents int32[h*w] or b"",
 *        num_parents, cum, num_contexts, K, e, g, m, aging)
 *   -> (bytes of h*w int32, bytes read including the zeros past the end)
 * The context of (r, c) is offsets[r, c] + cluster_above * (C + 1) + cluster_left (C: outside the grid),
 * or 0 without clusters; its parent parents[r, c]. */
static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *datao, *offo, *clo, *po, *cumo;
    Py_ssize_t h, w, num_contexts, num_parents;
    int nclusters, k, strength, pool, level, aging;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnOOiOnOniiiii", &datao, &h, &w, &offo, &clo, &nclusters, &po, &num_parents, &cumo,
                          &num_contexts, &k, &strength, &pool, &level, &aging))
        return NULL;
    Py_buffer dv, ov, clv, pv, cumv;
    int have = 0;
    PyObject *result = NULL, *out = NULL;
    Model m = {0};
    if (PyObject_GetBuffer(datao, &dv, PyBUF_SIMPLE) < 0) return NULL;
    have = 1;
    if (get_buffer(offo, &ov, 4, "offsets")) goto release;
    have = 2;
    if (get_buffer(clo, &clv, 4, "cluster")) goto release;
    have = 3;
    if (get_buffer(po, &pv, 4, "parents")) goto release;
    have = 4;
    if (get_buffer(cumo, &cumv, 4, "tables")) goto release;
    have = 5;
    if (h < 1 || w < 1 || h > (1 << 24) / w) {
        PyErr_Format(PyExc_ValueError, "grid %zdx%zd is empty or larger than 2**24 indices", h, w);
        goto release;
    }
    Py_ssize_t n = h * w;
    if (check_model_args(cumv.len, num_contexts, k, strength, pool, level, aging, pv.len, n, num_parents))
        goto release;
    if (nclusters < 0 || nclusters > MAX_CODES) {
        PyErr_Format(PyExc_ValueError, "%d clusters is not in [0, %d]", nclusters, MAX_CODES);
        goto release;
    }
    if (ov.len && ov.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must be one int32 per index");
        goto release;
    }
    if (nclusters && clv.len != (Py_ssize_t)k * 4) {
        PyErr_SetString(PyExc_ValueError, "cluster must be one int32 per code");
        goto release;
    }
    const int32_t *cl = (const int32_t *)clv.buf, *off = ov.len ? (const int32_t *)ov.buf : NULL;
    const int32_t *par = level ? (const int32_t *)pv.buf : NULL;
    for (int x = 0; nclusters && x < k; x++) {
        if (cl[x] < 0 || cl[x] >= nclusters) {
            PyErr_SetString(PyExc_ValueError, "cluster values must be in [0, num_clusters)");
            goto release;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, n * 4);
    if (!out) goto release;
    if (!model_init(&m, (const uint32_t *)cumv.buf, num_contexts, num_parents, k, strength, pool, level, aging, 1)) {
        PyErr_NoMemory();
        goto release;
    }
    int32_t *sym = (int32_t *)PyBytes_AS_STRING(out);
    const uint8_t *data = (const uint8_t *)dv.buf;
    size_t len = (size_t)dv.len, pos = 0;
    uint64_t d = 0, range = UINT64_MAX;
    int failed = 0;
    Py_ssize_t bad = 0, bad_context = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int i = 0; i < 8; i++, pos++) d = d << 8 | (pos < len ? data[pos] : 0);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t c = 0;
        if (nclusters) {
            Py_ssize_t row = i / w, col = i % w;
            int above = row ? cl[sym[i - w]] : nclusters, left = col ? cl[sym[i - 1]] : nclusters;
            c = (Py_ssize_t)above * (nclusters + 1) + left;
        }
        if (off) c += off[i];
        if (c < 0 || c >= num_contexts) {
            failed = 2;
            bad = i;
            bad_context = c;
            break;
        }
        Py_ssize_t p = par ? par[i] : 0; /* checked here, as the contexts: the caller's buffer is not ours */
        if (par && (p < 0 || p >= num_parents)) {
            failed = 4;
            bad = i;
            bad_context = p;
            break;
        }
        uint64_t total = total_of(&m, c, p);
        uint64_t r = range / total, v = d / r;
        if (v >= total) {
            failed = 3;
            bad = i;
            break;
        }
        int lo = 0, hi = k - 1; /* the largest x whose interval starts at or below v */
        uint64_t start = 0;      /* where lo's interval starts: every row starts at 0 */
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            uint64_t at = start_of(&m, c, p, mid);
            if (at <= v) {
                lo = mid;
                start = at;
            } else {
                hi = mid - 1;
            }
        }
        uint64_t width = width_of(&m, c, p, lo);
        if (!width) {
            failed = 3;
            bad = i;
            break;
        }
        d -= r * start;
        range = r * width;
        while (range < BOTTOM) {
            d = d << 8 | (pos < len ? data[pos] : 0);
            pos++;
            range <<= 8;
        }
        sym[i] = lo;
        if (update(&m, c, p, lo)) {
            failed = 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (failed == 1) {
        PyErr_NoMemory();
    } else if (failed == 2) {
        PyErr_Format(PyExc_ValueError, "index %zd has context %zd, outside the prior's %zd tables", bad, bad_context,
                     num_contexts);
    } else if (failed == 4) {
        PyErr_Format(PyExc_ValueError, "index %zd has parent %zd, outside [0, %zd)", bad, bad_context, num_parents);
    } else if (failed == 3) {
        PyErr_Format(PyExc_ValueError, "the coded value at index %zd is outside every symbol's interval", bad);
    } else {
        result = Py_BuildValue("(On)", out, (Py_ssize_t)pos);
    }
release:
    Py_XDECREF(out);
    model_free(&m);
    if (have >= 5) PyBuffer_Release(&cumv);
    if (have >= 4) PyBuffer_Release(&pv);
    if (have >= 3) PyBuffer_Release(&clv);
    if (have >= 2) PyBuffer_Release(&ov);
    if (have >= 1) PyBuffer_Release(&dv);
    return result;
}

/* ------------------------------------------------------------------ estimate */

/* estimate(symbols int32[n], contexts int32[n], parents int32[n] or b"", cum, num_contexts, num_parents, K,
 *          params bytes (e, g, m) triples, aging) -> [bits]
 * The code length in bits of the symbols under each (e, g, m) with the one aging h: one pass
 * over the symbols, the counts as the coder keeps them, the lengths in floating point (they
 * choose the parameters, they are not the coding). */
static PyObject *py_estimate(PyObject *self, PyObject *args) {
    PyObject *so, *co, *po, *cumo;
    Py_ssize_t num_contexts, num_parents;
    int k, aging;
    const char *params;
    Py_ssize_t nparams;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOnniy#i", &so, &co, &po, &cumo, &num_contexts, &num_parents, &k, &params, &nparams,
                          &aging))
        return NULL;
    if (nparams < 3 || nparams % 3 || nparams > 3 * 64) {
        PyErr_SetString(PyExc_ValueError, "params must be 1 to 64 (strength, pool, level) byte triples");
        return NULL;
    }
    int np = (int)(nparams / 3), pooled = 0, parented = 0;
    /* w(x) = f t + n_c(x) t s + [level] n_p(x) t s / 2**a + [pool] n(x) t s / 2**b, t = 2**W, s = 2**(24 - e) */
    double tw[64], cw[64], pw[64], gw[64];
    for (int j = 0; j < np; j++) {
        int e = (unsigned char)params[3 * j], g = (unsigned char)params[3 * j + 1], l = (unsigned char)params[3 * j + 2];
        if (e > PRECISION || g > MAX_POOL || l > MAX_POOL || (g && l > g)) {
            PyErr_Format(PyExc_ValueError, "parameters (%d, %d, %d) out of range", e, g, l);
            return NULL;
        }
        int w = g ? g - 1 : l ? l - 1 : 0, s = PRECISION - e;
        tw[j] = ldexp(1.0, w);
        cw[j] = ldexp(1.0, w + s);
        pw[j] = l ? ldexp(1.0, w - (l - 1) + s) : 0.0;
        gw[j] = g ? ldexp(1.0, w - (g - 1) + s) : 0.0;
        pooled |= g > 0;
        parented |= l > 0;
    }
    /* the counts of the coder with a pool and a parent level (their weights do not change the counts) */
    Coding cd;
    if (coding_open(&cd, so, co, po, cumo, num_contexts, num_parents, k, 0, pooled, parented, aging, 0)) return NULL;
    PyObject *result = NULL;
    const Model *m = &cd.m;
    double bits[64] = {0}, num[64], den[64];
    for (int j = 0; j < np; j++) num[j] = den[j] = 1.0;
    Py_ssize_t n = cd.n;
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int x;
        Py_ssize_t c, p;
        if (coding_at(&cd, i, &x, &c, &p)) {
            failed = 2;
            break;
        }
        const uint32_t *row = m->cum + (size_t)c * (size_t)(k + 1);
        const Context *cx = &m->ctx[c];
        double f = (double)(row[x + 1] - row[x]);
        double nx = cx->seen ? (double)cx->counts[x] : 0.0, nc = (double)cx->seen;
        double qx = 0.0, qn = 0.0;
        if (parented && m->par[p].seen) {
            qx = (double)m->par[p].counts[x];
            qn = (double)m->par[p].seen;
        }
        double px = pooled ? (double)m->pool.counts[x] : 0.0, pn = (double)m->pool.seen;
        /* products of 8 totals (each below 2**50) and of 8 weights (each >= 1) stay finite and
         * above 1: one log2 per 8 indices */
        for (int j = 0; j < np; j++) { /* no branch inside: the compiler vectorises it */
            num[j] *= (double)TOTAL * tw[j] + nc * cw[j] + qn * pw[j] + pn * gw[j];
            den[j] *= f * tw[j] + nx * cw[j] + qx * pw[j] + px * gw[j];
        }
        if ((i & 7) == 7 || i == n - 1) {
            for (int j = 0; j < np; j++) {
                bits[j] += log2(num[j] / den[j]);
                num[j] = den[j] = 1.0;
            }
        }
        if (update(&cd.m, c, p, x)) {
            failed = 1;
            break;
        }
    }
    Py_END_ALLOW_THREADS
    if (failed == 1) {
        PyErr_NoMemory();
    } else if (failed == 2) {
        PyErr_SetString(PyExc_ValueError, "a symbol, context or parent is out of range");
    } else {
        result = PyList_New(np);
        for (int j = 0; result && j < np; j++) {
            PyObject *b = PyFloat_FromDouble(bits[j]);
            if (!b) {
                Py_CLEAR(result);
                break;
            }
            PyList_SET_ITEM(result, j, b);
        }
    }
    coding_close(&cd);
    return result;
}

static PyMethodDef methods[] = {
    {"estimate", py_estimate, METH_VARARGS, "Code lengths in bits of symbols under several (strength, pool, level) triples."},
    {"encode", py_encode, METH_VARARGS, "Adaptive range coding of symbols in their contexts -> bytes."},
    {"decode", py_decode, METH_VARARGS, "The symbols of an adaptive range-coded grid -> (int32 bytes, bytes read)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_adaptive", "rawdiff's compiled adaptive range coder.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__adaptive(void) { return PyModule_Create(&module); }
