/* The adaptive range coder of rawdiff.codec.adaptive, compiled (the same bytes as its Python
 * reference, rawdiff.codec.adaptive.encode_reference / decode_reference).
 *
 * Model: the index at raster position i has a context c (a row of the prior's integer table
 * f_c, summing to 2**24); it is coded with the weights
 *
 *     w(x) = f_c(x) + n_c(x) << s,   total = 2**24 + n_c << s,   s = 24 - e
 *
 * where n_c(x) counts the x already coded in context c of this grid and n_c their sum: a
 * Dirichlet prior of strength 2**e on the table, updated with the frame's own counts. A
 * context stops counting at COUNT_CAP indices, so total < 2**41.
 *
 * Range coder: 64-bit range kept in [2**56, 2**64) by shifting out bytes, 64-bit low with the
 * carry propagated into the bytes already written; r = range / total >= 2**15, so the coder
 * loses at most total / range < 2**-15 of a symbol's interval. The end writes the one byte
 * that puts the value in the final interval on a multiple of 2**56; trailing zero bytes are
 * dropped (the decoder reads zeros past the end).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION 24
#define TOTAL ((uint64_t)1 << PRECISION)
#define BOTTOM ((uint64_t)1 << 56)
#define COUNT_CAP 65536u
#define MAX_CODES 65536

typedef struct {
    uint32_t *counts; /* K */
    uint32_t *tree;   /* Fenwick tree over counts, 1-based, K + 1 */
    uint32_t seen;
} Context;

typedef struct {
    int k;
    int shift;
    Py_ssize_t num_contexts;
    const uint32_t *cum; /* num_contexts x (K + 1): the tables' cumulative sums */
    Context *ctx;
} Model;

static int model_init(Model *m, const uint32_t *cum, Py_ssize_t num_contexts, int k, int shift) {
    m->k = k;
    m->shift = shift;
    m->num_contexts = num_contexts;
    m->cum = cum;
    m->ctx = (Context *)calloc((size_t)num_contexts, sizeof(Context));
    return m->ctx != NULL;
}

static void model_free(Model *m) {
    if (!m->ctx) return;
    for (Py_ssize_t i = 0; i < m->num_contexts; i++) {
        free(m->ctx[i].counts);
        free(m->ctx[i].tree);
    }
    free(m->ctx);
    m->ctx = NULL;
}

static uint64_t prefix(const Context *c, int x) {
    uint64_t s = 0;
    for (int i = x; i > 0; i -= i & -i) s += c->tree[i];
    return s;
}

/* 0 on success, -1 when out of memory */
static int update(Model *m, Py_ssize_t ci, int x) {
    Context *c = &m->ctx[ci];
    if (c->seen >= COUNT_CAP) return 0;
    if (!c->counts) {
        c->counts = (uint32_t *)calloc((size_t)m->k, sizeof(uint32_t));
        c->tree = (uint32_t *)calloc((size_t)m->k + 1, sizeof(uint32_t));
        if (!c->counts || !c->tree) return -1;
    }
    c->counts[x] += 1;
    for (int i = x + 1; i <= m->k; i += i & -i) c->tree[i] += 1;
    c->seen += 1;
    return 0;
}

/* the interval of x in context ci: start, width and the total */
static void interval(const Model *m, Py_ssize_t ci, int x, uint64_t *start, uint64_t *width, uint64_t *total) {
    const uint32_t *row = m->cum + (size_t)ci * (size_t)(m->k + 1);
    const Context *c = &m->ctx[ci];
    *start = row[x];
    *width = (uint64_t)row[x + 1] - row[x];
    *total = TOTAL;
    if (c->seen) {
        *start += prefix(c, x) << m->shift;
        *width += (uint64_t)c->counts[x] << m->shift;
        *total += (uint64_t)c->seen << m->shift;
    }
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

static int check_model_args(Py_ssize_t cum_len, Py_ssize_t num_contexts, int k, int strength) {
    if (k < 2 || k > MAX_CODES) {
        PyErr_Format(PyExc_ValueError, "codebook size %d is not in [2, %d]", k, MAX_CODES);
        return -1;
    }
    if (strength < 0 || strength > PRECISION) {
        PyErr_Format(PyExc_ValueError, "strength exponent %d is not in [0, %d]", strength, PRECISION);
        return -1;
    }
    if (num_contexts < 1 || cum_len != num_contexts * (Py_ssize_t)(k + 1) * 4) {
        PyErr_SetString(PyExc_ValueError, "cumulative tables must be num_contexts x (K + 1) uint32");
        return -1;
    }
    return 0;
}

/* encode(symbols int32[n], contexts int32[n], cum uint32[C x (K+1)], num_contexts, K, e) -> bytes */
static PyObject *py_encode(PyObject *self, PyObject *args) {
    PyObject *so, *co, *cumo;
    Py_ssize_t num_contexts;
    int k, strength;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOnii", &so, &co, &cumo, &num_contexts, &k, &strength)) return NULL;
    Py_buffer sv, cv, cumv;
    if (get_buffer(so, &sv, 4, "symbols")) return NULL;
    if (get_buffer(co, &cv, 4, "contexts")) {
        PyBuffer_Release(&sv);
        return NULL;
    }
    if (get_buffer(cumo, &cumv, 4, "tables")) {
        PyBuffer_Release(&sv);
        PyBuffer_Release(&cv);
        return NULL;
    }
    PyObject *result = NULL;
    Model m = {0};
    Encoder e = {NULL, 0, 0, 0, UINT64_MAX};
    Py_ssize_t n = sv.len / 4;
    const int32_t *sym = (const int32_t *)sv.buf, *ctx = (const int32_t *)cv.buf;
    if (check_model_args(cumv.len, num_contexts, k, strength)) goto done;
    if (cv.len != sv.len) {
        PyErr_SetString(PyExc_ValueError, "one context per symbol");
        goto done;
    }
    if (!model_init(&m, (const uint32_t *)cumv.buf, num_contexts, k, PRECISION - strength)) {
        PyErr_NoMemory();
        goto done;
    }
    int failed = 0;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < n; i++) {
        int x = sym[i];
        Py_ssize_t c = ctx[i];
        if (x < 0 || x >= k || c < 0 || c >= num_contexts) {
            failed = 2;
            break;
        }
        uint64_t start, width, total;
        interval(&m, c, x, &start, &width, &total);
        if (encode_one(&e, start, width, total) || update(&m, c, x)) {
            failed = 1;
            break;
        }
    }
    if (!failed && encoder_finish(&e)) failed = 1;
    Py_END_ALLOW_THREADS
    if (failed == 1)
        PyErr_NoMemory();
    else if (failed == 2)
        PyErr_SetString(PyExc_ValueError, "a symbol or context is out of range");
    else
        result = PyBytes_FromStringAndSize((const char *)e.buf, (Py_ssize_t)e.len);
done:
    model_free(&m);
    free(e.buf);
    PyBuffer_Release(&sv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&cumv);
    return result;
}

/* ------------------------------------------------------------------ decoder */

/* decode(data, h, w, offsets int32[h*w] or b"", cluster int32[K] or b"", num_clusters, cum, num_contexts, K, e)
 *   -> (bytes of h*w int32, bytes read including the zeros past the end)
 * The context of (r, c) is offsets[r, c] + cluster_above * (C + 1) + cluster_left (C: outside the grid),
 * or 0 without clusters. */
static PyObject *py_decode(PyObject *self, PyObject *args) {
    PyObject *datao, *offo, *clo, *cumo;
    Py_ssize_t h, w, num_contexts;
    int nclusters, k, strength;
    (void)self;
    if (!PyArg_ParseTuple(args, "OnnOOiOnii", &datao, &h, &w, &offo, &clo, &nclusters, &cumo, &num_contexts, &k,
                          &strength))
        return NULL;
    Py_buffer dv, ov, clv, cumv;
    int have = 0;
    PyObject *result = NULL, *out = NULL;
    Model m = {0};
    if (PyObject_GetBuffer(datao, &dv, PyBUF_SIMPLE) < 0) return NULL;
    have = 1;
    if (get_buffer(offo, &ov, 4, "offsets")) goto release;
    have = 2;
    if (get_buffer(clo, &clv, 4, "cluster")) goto release;
    have = 3;
    if (get_buffer(cumo, &cumv, 4, "tables")) goto release;
    have = 4;
    if (check_model_args(cumv.len, num_contexts, k, strength)) goto release;
    if (h < 1 || w < 1 || h > (1 << 24) / w) {
        PyErr_Format(PyExc_ValueError, "grid %zdx%zd is empty or larger than 2**24 indices", h, w);
        goto release;
    }
    Py_ssize_t n = h * w;
    if (ov.len && ov.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "offsets must be one int32 per index");
        goto release;
    }
    if (nclusters && clv.len != (Py_ssize_t)k * 4) {
        PyErr_SetString(PyExc_ValueError, "cluster must be one int32 per code");
        goto release;
    }
    const int32_t *cl = (const int32_t *)clv.buf, *off = ov.len ? (const int32_t *)ov.buf : NULL;
    for (int x = 0; nclusters && x < k; x++) {
        if (cl[x] < 0 || cl[x] >= nclusters) {
            PyErr_SetString(PyExc_ValueError, "cluster values must be in [0, num_clusters)");
            goto release;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, n * 4);
    if (!out) goto release;
    if (!model_init(&m, (const uint32_t *)cumv.buf, num_contexts, k, PRECISION - strength)) {
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
        const uint32_t *row = m.cum + (size_t)c * (size_t)(k + 1);
        const Context *cx = &m.ctx[c];
        int shift = m.shift;
        uint64_t total = TOTAL + (cx->seen ? (uint64_t)cx->seen << shift : 0);
        uint64_t r = range / total, v = d / r;
        if (v >= total) {
            failed = 3;
            bad = i;
            break;
        }
        int lo = 0, hi = k - 1; /* the largest x whose interval starts at or below v */
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            uint64_t start = row[mid] + (cx->seen ? prefix(cx, mid) << shift : 0);
            if (start <= v)
                lo = mid;
            else
                hi = mid - 1;
        }
        uint64_t start, width;
        interval(&m, c, lo, &start, &width, &total);
        d -= r * start;
        range = r * width;
        while (range < BOTTOM) {
            d = d << 8 | (pos < len ? data[pos] : 0);
            pos++;
            range <<= 8;
        }
        sym[i] = lo;
        if (update(&m, c, lo)) {
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
    } else if (failed == 3) {
        PyErr_Format(PyExc_ValueError, "the coded value at index %zd is outside every symbol's interval", bad);
    } else {
        result = Py_BuildValue("(On)", out, (Py_ssize_t)pos);
    }
release:
    Py_XDECREF(out);
    model_free(&m);
    if (have >= 4) PyBuffer_Release(&cumv);
    if (have >= 3) PyBuffer_Release(&clv);
    if (have >= 2) PyBuffer_Release(&ov);
    if (have >= 1) PyBuffer_Release(&dv);
    return result;
}

static PyMethodDef methods[] = {
    {"encode", py_encode, METH_VARARGS, "Adaptive range coding of symbols in their contexts -> bytes."},
    {"decode", py_decode, METH_VARARGS, "The symbols of an adaptive range-coded grid -> (int32 bytes, bytes read)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_adaptive", "rawdiff's compiled adaptive range coder.",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__adaptive(void) { return PyModule_Create(&module); }
