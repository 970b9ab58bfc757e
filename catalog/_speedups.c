/*
 * Compiled fast paths of the envelope builder (catalog/envelope.py).  Optional: when this
 * module is not built, or CDC_NO_SPEEDUPS is set, every payload goes through pydantic and
 * event ids through hashlib, with the same results.
 *
 *   Plan(fields)
 *       fields: a sequence of (name, kind, arg) in the model's field order, compiled by
 *       catalog.envelope._plan from the model's core schema.  Calling the plan with
 *       (payload, valid_timestamps) returns what the pydantic validator would return for a
 *       payload that is already in canonical form (a new dict: declared fields in field
 *       order, then the extra keys in input order; dicts and lists copied as pydantic copies
 *       them), provided every value is JSON-ready as it is.  Anything else (a missing
 *       required field, a value to convert or reject, a key that is not text, a value
 *       without a JSON form) returns None, and the caller asks pydantic, whose answer and
 *       error messages are the reference.  A unit test holds the two equal.
 *
 *   set_namespace(bytes16) / event_id(key)
 *       str(uuid5(namespace, key)): SHA-1 of namespace + UTF-8 key, version 5, RFC 4122
 *       variant, lower-case hyphenated text.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Field kinds; the numbers are catalog.envelope's _K_* constants. */
enum {
    K_FALLBACK = 0,  /* present: ask pydantic */
    K_UUID = 1,      /* lower-case hyphenated uuid text */
    K_TENANT = 2,    /* non-empty text that is not a uuid with upper-case digits */
    K_TEXT = 3,      /* any text */
    K_NONEMPTY = 4,  /* text of at least one character */
    K_UTC_TS = 5,    /* a canonical timestamp text already validated (a key of valid_ts) */
    K_LITERAL = 6,   /* text equal to one of arg (a tuple of str) */
    K_BOOL = 7,      /* True or False */
    K_INT = 8,       /* an int (not a bool) within arg = (low or None, high or None) */
    K_RECORD = 9,    /* dict with text keys, JSON-ready values */
    K_CHANGES = 10,  /* dict with text keys of dicts with text keys, JSON-ready values */
    K_STRLIST = 11,  /* list of text */
    K_UUIDLIST = 12, /* list of lower-case uuid text */
    K_ANY = 13,      /* any JSON-ready value */
};
#define K_NULLABLE 0x100 /* None is valid as well */
#define K_REQUIRED 0x200 /* the key must be present */

typedef struct {
    PyObject *name;
    int kind;
    PyObject *arg;
} FieldSpec;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    FieldSpec *fields;
    PyObject *index; /* name -> position, to tell declared keys from extra ones */
} PlanObject;

/* Text pydantic takes as it is: an exact str that has a UTF-8 form (no lone surrogates). */
static int
plain_text(PyObject *v)
{
    if (!PyUnicode_CheckExact(v))
        return 0;
    if (PyUnicode_IS_ASCII(v))
        return 1;
    if (PyUnicode_AsUTF8AndSize(v, NULL) == NULL) {
        PyErr_Clear();
        return 0;
    }
    return 1;
}

static int
hexlower(int c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

static int
hexupper(int c)
{
    return c >= 'A' && c <= 'F';
}

/* 1: lower-case uuid text; 2: uuid text with upper-case digits; 0: not uuid-shaped. */
static int
uuid_shape(PyObject *v)
{
    if (!PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 36)
        return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(v);
    int upper = 0;
    for (int i = 0; i < 36; i++) {
        int c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return 0;
        } else if (!hexlower(c)) {
            if (!hexupper(c))
                return 0;
            upper = 1;
        }
    }
    return upper ? 2 : 1;
}

static int
is_uuid(PyObject *v)
{
    return PyUnicode_CheckExact(v) && uuid_shape(v) == 1;
}

/* JSON-ready as it is: what catalog.envelope._is_plain accepts. */
static int
json_ready(PyObject *v, int depth)
{
    if (v == Py_None || v == Py_True || v == Py_False || PyUnicode_CheckExact(v) || PyLong_CheckExact(v))
        return 1;
    if (PyFloat_CheckExact(v))
        return isfinite(PyFloat_AS_DOUBLE(v));
    if (depth > 64)
        return 0;
    if (PyDict_CheckExact(v)) {
        Py_ssize_t pos = 0;
        PyObject *k, *x;
        while (PyDict_Next(v, &pos, &k, &x)) {
            if (!PyUnicode_CheckExact(k) || !json_ready(x, depth + 1))
                return 0;
        }
        return 1;
    }
    if (PyList_CheckExact(v)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v); i++) {
            if (!json_ready(PyList_GET_ITEM(v, i), depth + 1))
                return 0;
        }
        return 1;
    }
    return 0;
}

/* A dict with text keys and JSON-ready values, copied; NULL (no error set) when it is not. */
static PyObject *
record_copy(PyObject *v, int nested)
{
    if (!PyDict_CheckExact(v))
        return NULL;
    Py_ssize_t pos = 0;
    PyObject *k, *x;
    while (PyDict_Next(v, &pos, &k, &x)) {
        if (!plain_text(k))
            return NULL;
        if (nested) {
            if (!PyDict_CheckExact(x))
                return NULL;
            Py_ssize_t p2 = 0;
            PyObject *k2, *x2;
            while (PyDict_Next(x, &p2, &k2, &x2)) {
                if (!plain_text(k2) || !json_ready(x2, 2))
                    return NULL;
            }
        } else if (!json_ready(x, 1)) {
            return NULL;
        }
    }
    if (!nested)
        return PyDict_Copy(v);
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    pos = 0;
    while (PyDict_Next(v, &pos, &k, &x)) {
        PyObject *inner = PyDict_Copy(x);
        if (inner == NULL || PyDict_SetItem(out, k, inner) < 0) {
            Py_XDECREF(inner);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(inner);
    }
    return out;
}

/* The value pydantic would return for a canonical ``v`` of this kind (a new reference),
 * or NULL: ask pydantic (an error is set only when Python itself failed). */
static PyObject *
check_value(int kind, PyObject *arg, PyObject *v, PyObject *valid_ts)
{
    if (v == Py_None)
        return (kind & K_NULLABLE) ? Py_NewRef(v) : NULL;
    switch (kind & 0xff) {
    case K_UUID:
        return is_uuid(v) ? Py_NewRef(v) : NULL;
    case K_TENANT:
        if (!plain_text(v) || PyUnicode_GET_LENGTH(v) == 0 || uuid_shape(v) == 2)
            return NULL;
        return Py_NewRef(v);
    case K_TEXT:
        return plain_text(v) ? Py_NewRef(v) : NULL;
    case K_NONEMPTY:
        return plain_text(v) && PyUnicode_GET_LENGTH(v) > 0 ? Py_NewRef(v) : NULL;
    case K_UTC_TS: {
        if (!PyUnicode_CheckExact(v))
            return NULL;
        PyObject *known = PyDict_GetItemWithError(valid_ts, v);
        if (known == NULL || !PyUnicode_CheckExact(known))
            return NULL;
        return Py_NewRef(known);
    }
    case K_LITERAL:
        if (!PyUnicode_CheckExact(v))
            return NULL;
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(arg); i++) {
            PyObject *expected = PyTuple_GET_ITEM(arg, i);
            if (PyUnicode_CheckExact(expected) && PyUnicode_Compare(v, expected) == 0)
                return Py_NewRef(expected);
        }
        return NULL;
    case K_BOOL:
        return (v == Py_True || v == Py_False) ? Py_NewRef(v) : NULL;
    case K_INT: {
        if (!PyLong_CheckExact(v))
            return NULL;
        PyObject *low = PyTuple_GET_ITEM(arg, 0), *high = PyTuple_GET_ITEM(arg, 1);
        if (low != Py_None) {
            int ok = PyObject_RichCompareBool(v, low, Py_GE);
            if (ok <= 0)
                return NULL;
        }
        if (high != Py_None) {
            int ok = PyObject_RichCompareBool(v, high, Py_LE);
            if (ok <= 0)
                return NULL;
        }
        return Py_NewRef(v);
    }
    case K_RECORD:
        return record_copy(v, 0);
    case K_CHANGES:
        return record_copy(v, 1);
    case K_STRLIST:
    case K_UUIDLIST: {
        if (!PyList_CheckExact(v))
            return NULL;
        Py_ssize_t n = PyList_GET_SIZE(v);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *item = PyList_GET_ITEM(v, i);
            if ((kind & 0xff) == K_UUIDLIST ? !is_uuid(item) : !plain_text(item))
                return NULL;
        }
        return PyList_GetSlice(v, 0, n);
    }
    case K_ANY:
        return json_ready(v, 0) ? Py_NewRef(v) : NULL;
    default:
        return NULL;
    }
}

static PyObject *
Plan_call(PlanObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *payload, *valid_ts;
    if (!PyArg_ParseTuple(args, "OO!", &payload, &PyDict_Type, &valid_ts))
        return NULL;
    if (!PyDict_CheckExact(payload))
        Py_RETURN_NONE;
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        FieldSpec *f = &self->fields[i];
        PyObject *v = PyDict_GetItemWithError(payload, f->name);
        if (v == NULL) {
            if (PyErr_Occurred())
                goto error;
            if (f->kind & K_REQUIRED)
                goto fallback;
            continue;
        }
        seen++;
        PyObject *checked = check_value(f->kind, f->arg, v, valid_ts);
        if (checked == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto fallback;
        }
        int rc = PyDict_SetItem(out, f->name, checked);
        Py_DECREF(checked);
        if (rc < 0)
            goto error;
    }
    if (seen < PyDict_GET_SIZE(payload)) {
        /* Extra keys: kept as they are, after the declared fields, in input order. */
        Py_ssize_t pos = 0;
        PyObject *k, *v;
        while (PyDict_Next(payload, &pos, &k, &v)) {
            if (!plain_text(k))
                goto fallback;
            int declared = PyDict_Contains(self->index, k);
            if (declared < 0)
                goto error;
            if (declared)
                continue;
            if (!json_ready(v, 0))
                goto fallback;
            if (PyDict_SetItem(out, k, v) < 0)
                goto error;
        }
    }
    return out;
fallback:
    Py_DECREF(out);
    Py_RETURN_NONE;
error:
    Py_DECREF(out);
    return NULL;
}

static int
Plan_init(PlanObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *spec;
    if (!PyArg_ParseTuple(args, "O", &spec))
        return -1;
    if (self->fields != NULL) {
        PyErr_SetString(PyExc_TypeError, "a Plan is initialised once");
        return -1;
    }
    PyObject *seq = PySequence_Fast(spec, "fields must be a sequence of (name, kind, arg)");
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    self->fields = PyMem_Calloc(n ? n : 1, sizeof(FieldSpec));
    self->index = PyDict_New();
    if (self->fields == NULL || self->index == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name, *arg;
        int kind;
        if (!PyArg_ParseTuple(item, "UiO", &name, &kind, &arg)) {
            Py_DECREF(seq);
            return -1;
        }
        int base = kind & 0xff;
        if ((base == K_LITERAL && !PyTuple_Check(arg)) ||
            (base == K_INT && (!PyTuple_Check(arg) || PyTuple_GET_SIZE(arg) != 2))) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "field %R: kind %d needs a tuple argument", name, base);
            return -1;
        }
        self->fields[i].name = Py_NewRef(name);
        self->fields[i].kind = kind;
        self->fields[i].arg = Py_NewRef(arg);
        self->n = i + 1;
        PyObject *at = PyLong_FromSsize_t(i);
        int rc = at == NULL ? -1 : PyDict_SetItem(self->index, name, at);
        Py_XDECREF(at);
        if (rc < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    return 0;
}

static void
Plan_dealloc(PlanObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++) {
        Py_XDECREF(self->fields[i].name);
        Py_XDECREF(self->fields[i].arg);
    }
    PyMem_Free(self->fields);
    Py_XDECREF(self->index);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject PlanType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "catalog._speedups.Plan",
    .tp_basicsize = sizeof(PlanObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A compiled check of canonical payloads for one model (see the module docstring).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Plan_init,
    .tp_dealloc = (destructor)Plan_dealloc,
    .tp_call = (ternaryfunc)Plan_call,
};

/* --- SHA-1 (FIPS 180-4) and the uuid5 text ------------------------------------------------- */

typedef struct {
    uint32_t h[5];
    uint64_t length;
    unsigned char block[64];
    size_t used;
} Sha1;

static uint32_t
rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static void
sha1_block(Sha1 *s, const unsigned char *p)
{
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
               (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++)
        w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol(b, 30);
        b = a;
        a = t;
    }
    s->h[0] += a;
    s->h[1] += b;
    s->h[2] += c;
    s->h[3] += d;
    s->h[4] += e;
}

static void
sha1_init(Sha1 *s)
{
    static const uint32_t start[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    memcpy(s->h, start, sizeof start);
    s->length = 0;
    s->used = 0;
}

static void
sha1_update(Sha1 *s, const unsigned char *p, size_t n)
{
    s->length += n;
    while (n > 0) {
        size_t take = 64 - s->used;
        if (take > n)
            take = n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

static void
sha1_final(Sha1 *s, unsigned char out[20])
{
    uint64_t bits = s->length * 8;
    unsigned char pad = 0x80;
    sha1_update(s, &pad, 1);
    unsigned char zero = 0;
    while (s->used != 56)
        sha1_update(s, &zero, 1);
    unsigned char len[8];
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha1_update(s, len, 8);
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

static unsigned char namespace_bytes[16];
static int namespace_set = 0;

static PyObject *
set_namespace(PyObject *self, PyObject *arg)
{
    char *data;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(arg, &data, &n) < 0)
        return NULL;
    if (n != 16) {
        PyErr_SetString(PyExc_ValueError, "a uuid namespace is 16 bytes");
        return NULL;
    }
    memcpy(namespace_bytes, data, 16);
    namespace_set = 1;
    Py_RETURN_NONE;
}

static PyObject *
event_id(PyObject *self, PyObject *key)
{
    if (!namespace_set) {
        PyErr_SetString(PyExc_RuntimeError, "set_namespace() first");
        return NULL;
    }
    if (!PyUnicode_Check(key)) {
        PyErr_SetString(PyExc_TypeError, "the key is text");
        return NULL;
    }
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(key, &n);
    if (utf8 == NULL)
        return NULL;
    Sha1 s;
    unsigned char d[20];
    sha1_init(&s);
    sha1_update(&s, namespace_bytes, 16);
    sha1_update(&s, (const unsigned char *)utf8, (size_t)n);
    sha1_final(&s, d);
    d[6] = (unsigned char)((d[6] & 0x0F) | 0x50);
    d[8] = (unsigned char)((d[8] & 0x3F) | 0x80);
    static const char hex[] = "0123456789abcdef";
    char text[36];
    int j = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            text[j++] = '-';
        text[j++] = hex[d[i] >> 4];
        text[j++] = hex[d[i] & 0x0F];
    }
    return PyUnicode_FromStringAndSize(text, 36);
}

static PyMethodDef methods[] = {
    {"set_namespace", set_namespace, METH_O, "set_namespace(bytes16): the uuid5 namespace of event_id."},
    {"event_id", event_id, METH_O, "event_id(key) -> str(uuid5(namespace, key))."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "catalog._speedups",
    "Compiled fast paths of the envelope builder (see catalog/_speedups.c).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&PlanType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
