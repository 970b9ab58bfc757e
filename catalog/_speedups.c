/*
 * Compiled fast paths of the envelope builder (catalog/envelope.py).  Optional: when this
 * module is not built, or CDC_NO_SPEEDUPS is set, every payload goes through pydantic and
 * event ids through hashlib, with the same results.
 *
 *   Plan(fields)
 *       fields: a sequence of (name, kind, arg) in the model's field order, compiled by
 *       catalog.envelope._plan from the model's core schema.  Calling the plan with
 *       (payload, valid_timestamps) returns what the pydantic validator would return for a
 *       payload that is already in canonical form (an equal new dict, in the payload's key
 *       order rather than the model's, which no serialisation sees since every sink sorts
 *       keys; dicts and lists copied as pydantic copies them), provided every value is
 *       JSON-ready as it is.  Anything else (a missing
 *       required field, a value to convert or reject, a key that is not text, a value
 *       without a JSON form) returns None, and the caller asks pydantic, whose answer and
 *       error messages are the reference.  A unit test holds the two equal.
 *
 *   set_namespace(bytes16) / event_id(key)
 *       str(uuid5(namespace, key)): SHA-1 of namespace + UTF-8 key, version 5, RFC 4122
 *       variant, lower-case hyphenated text.
 *
 *   configure_json(orjson.dumps, orjson.OPT_SORT_KEYS) / envelope_json(id, event_type,
 *   timestamp, payload, key, schema_ref, source_json)
 *       the envelope's byte-stable JSON with only the payload handed to orjson, or None when
 *       a text field would need escaping (the caller then serialises the whole with orjson).
 *
 *   configure_envelopes(types, tenants, valid_timestamps, envelope_class) / envelope(draft,
 *   source, lsn_text)
 *       the whole of catalog.envelope.build_envelope for the common change-driven draft, or
 *       None for anything else (the Python builder then decides and names every error).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define OPENSSL_SUPPRESS_DEPRECATED /* SHA1_Init/Update/Final: no algorithm fetch per call */
#include <openssl/sha.h>

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

/* The key layout of one payload shape: its keys in insertion order (held, so that identity
 * means equality) and, for each, the declared field it is (or -1 for an extra key). Derivers
 * build each event's payload at one place in their code, with the same literal keys, so a
 * plan sees a handful of layouts and recognises each by comparing key pointers. */
#define LAYOUTS 8
typedef struct {
    Py_ssize_t n;
    PyObject **keys;
    int *field;
} Layout;

typedef struct {
    PyObject_HEAD
    Py_ssize_t n;
    FieldSpec *fields;
    PyObject *index; /* name -> position, to tell declared keys from extra ones */
    Layout layouts[LAYOUTS];
    int next_layout;  /* the slot the next new layout replaces once all are taken */
    int busy;         /* checks in progress: a layout in use is never replaced under them */
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

/* 1 for 0-9a-f, 2 for A-F, 0 otherwise (filled at import). */
static unsigned char hex_class[256];

/* 1: lower-case uuid text; 2: uuid text with upper-case digits; 0: not uuid-shaped. */
static int
uuid_shape(PyObject *v)
{
    if (!PyUnicode_IS_ASCII(v) || PyUnicode_GET_LENGTH(v) != 36)
        return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(v);
    if (s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-')
        return 0;
    unsigned seen = 0, all = 1;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23)
            continue;
        unsigned c = hex_class[s[i]];
        seen |= c;
        all &= c != 0;
    }
    if (!all)
        return 0;
    return (seen & 2) ? 2 : 1;
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

/* A dict with text keys and JSON-ready values, copied (the dict itself when `adopt`); NULL (no
 * error set) when it is not. */
static PyObject *
record_copy(PyObject *v, int nested, int adopt)
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
    if (adopt)
        return Py_NewRef(v);
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
 * or NULL: ask pydantic (an error is set only when Python itself failed). With `adopt`, a
 * dict or list that pydantic would copy is returned itself. */
static PyObject *
check_value(int kind, PyObject *arg, PyObject *v, PyObject *valid_ts, int adopt)
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
        /* Validated before when it is a key (pydantic's own copy of the text, equal to v): v
         * itself is the answer, so a transaction's shared occurredAt stays one object. */
        PyObject *known = PyDict_GetItemWithError(valid_ts, v);
        if (known == NULL || !PyUnicode_CheckExact(known))
            return NULL;
        return Py_NewRef(v);
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
        return record_copy(v, 0, adopt);
    case K_CHANGES:
        return record_copy(v, 1, adopt);
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
        return adopt ? Py_NewRef(v) : PyList_GetSlice(v, 0, n);
    }
    case K_ANY:
        return json_ready(v, 0) ? Py_NewRef(v) : NULL;
    default:
        return NULL;
    }
}

/* The layout of ``payload``'s keys (found or added), or NULL: a key that is not plain text or
 * a required field missing (ask pydantic; an error is set only when Python itself failed). */
static Layout *
layout_of(PlanObject *self, PyObject *payload)
{
    Py_ssize_t n = PyDict_GET_SIZE(payload);
    for (int l = 0; l < LAYOUTS; l++) {
        Layout *lay = &self->layouts[l];
        if (lay->keys == NULL || lay->n != n)
            continue;
        Py_ssize_t pos = 0, i = 0;
        PyObject *k, *v;
        while (PyDict_Next(payload, &pos, &k, &v) && k == lay->keys[i])
            i++;
        if (i == n)
            return lay;
    }
    /* A new layout: name every key, and check the required fields are there. */
    PyObject **keys = PyMem_Calloc(n ? n : 1, sizeof(PyObject *));
    int *field = PyMem_Calloc(n ? n : 1, sizeof(int));
    if (keys == NULL || field == NULL) {
        PyMem_Free(keys);
        PyMem_Free(field);
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t pos = 0, i = 0, required = 0;
    PyObject *k, *v;
    while (PyDict_Next(payload, &pos, &k, &v)) {
        if (!plain_text(k))
            break;
        PyObject *at = PyDict_GetItemWithError(self->index, k);
        if (at == NULL && PyErr_Occurred())
            break;
        field[i] = at == NULL ? -1 : (int)PyLong_AsLong(at);
        if (at != NULL && (self->fields[field[i]].kind & K_REQUIRED))
            required++;
        keys[i++] = Py_NewRef(k);
    }
    Py_ssize_t wanted = 0;
    for (Py_ssize_t f = 0; f < self->n; f++)
        wanted += (self->fields[f].kind & K_REQUIRED) != 0;
    if (i != n || required != wanted) {
        for (Py_ssize_t j = 0; j < i; j++)
            Py_DECREF(keys[j]);
        PyMem_Free(keys);
        PyMem_Free(field);
        return NULL;
    }
    Layout *lay = NULL;
    for (int l = 0; l < LAYOUTS && lay == NULL; l++) {
        if (self->layouts[l].keys == NULL)
            lay = &self->layouts[l];
    }
    if (lay == NULL && self->busy) {
        /* All taken while a check is running (Python code ran inside it: a collection, another
         * thread): replacing one could pull its layout from under it. Let pydantic answer. */
        for (Py_ssize_t j = 0; j < i; j++)
            Py_DECREF(keys[j]);
        PyMem_Free(keys);
        PyMem_Free(field);
        return NULL;
    }
    if (lay == NULL) { /* all taken (payloads built with changing keys): replace in turn */
        lay = &self->layouts[self->next_layout];
        self->next_layout = (self->next_layout + 1) % LAYOUTS;
        for (Py_ssize_t j = 0; j < lay->n; j++)
            Py_DECREF(lay->keys[j]);
        PyMem_Free(lay->keys);
        PyMem_Free(lay->field);
    }
    lay->n = n;
    lay->keys = keys;
    lay->field = field;
    return lay;
}

static PyObject *plan_check_in(PlanObject *self, PyObject *payload, PyObject *valid_ts, Layout *lay, int adopt);

/* The checked payload: a copy as pydantic's would be, or with `adopt` the payload itself when
 * every value is already what pydantic would return (the caller owns it and hands it over). */
static PyObject *
plan_check(PlanObject *self, PyObject *payload, PyObject *valid_ts, int adopt)
{
    if (self->index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Plan not initialised");
        return NULL;
    }
    if (!PyDict_CheckExact(payload))
        Py_RETURN_NONE;
    Layout *lay = layout_of(self, payload);
    if (lay == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    /* Copies allocate, and an allocation may run Python code (a collection): the payload and
     * this layout are held for the whole check. */
    Py_INCREF(payload);
    self->busy++;
    PyObject *out = plan_check_in(self, payload, valid_ts, lay, adopt);
    self->busy--;
    Py_DECREF(payload);
    return out;
}

static PyObject *
plan_check_in(PlanObject *self, PyObject *payload, PyObject *valid_ts, Layout *lay, int adopt)
{
    /* Every value as its field wants it (extra ones JSON-ready); what pydantic copies is
     * copied, everything else is returned as it is, in a shallow copy of the payload. */
    PyObject *out = NULL;
    Py_ssize_t pos = 0, i = 0;
    PyObject *k, *v;
    while (PyDict_Next(payload, &pos, &k, &v)) {
        if (i >= lay->n || k != lay->keys[i])
            goto fallback; /* the payload changed while it was checked */
        int f = lay->field[i++];
        if (f < 0) {
            if (!json_ready(v, 0))
                goto fallback;
            continue;
        }
        FieldSpec *spec = &self->fields[f];
        PyObject *checked = check_value(spec->kind, spec->arg, v, valid_ts, adopt);
        if (checked == NULL) {
            if (PyErr_Occurred())
                goto error;
            goto fallback;
        }
        if (checked == v) {
            Py_DECREF(checked);
            continue;
        }
        if (out == NULL && (out = PyDict_Copy(payload)) == NULL) {
            Py_DECREF(checked);
            goto error;
        }
        int rc = PyDict_SetItem(out, k, checked);
        Py_DECREF(checked);
        if (rc < 0)
            goto error;
    }
    if (i != lay->n)
        goto fallback;
    if (out != NULL)
        return out;
    return adopt ? Py_NewRef(payload) : PyDict_Copy(payload);
fallback:
    Py_XDECREF(out);
    Py_RETURN_NONE;
error:
    Py_XDECREF(out);
    return NULL;
}

static PyObject *
Plan_call(PlanObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *payload, *valid_ts;
    if (!PyArg_ParseTuple(args, "OO!", &payload, &PyDict_Type, &valid_ts))
        return NULL;
    return plan_check(self, payload, valid_ts, 0);
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
    for (int l = 0; l < LAYOUTS; l++) {
        for (Py_ssize_t j = 0; j < self->layouts[l].n; j++)
            Py_XDECREF(self->layouts[l].keys[j]);
        PyMem_Free(self->layouts[l].keys);
        PyMem_Free(self->layouts[l].field);
    }
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

/* --- the uuid5 text: SHA-1 from the OpenSSL libcrypto the interpreter's hashlib uses -------- */

static unsigned char namespace_bytes[16];
static int namespace_set = 0;
static PyObject *str_tenant_id = NULL, *str_occurred_at = NULL;
static PyObject *uuid_text(const char *key, Py_ssize_t n);

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
    return uuid_text(utf8, n);
}

/* --- the whole envelope, for the common draft -------------------------------------------- */

static PyObject *env_types = NULL;   /* event type -> (Plan, payload schema ref) */
static PyObject *env_tenants = NULL; /* tenant as given -> canonical text (catalog.envelope._TENANTS) */
static PyObject *env_valid_ts = NULL;
static PyObject *env_class = NULL;
static Py_ssize_t env_offsets[7]; /* the slots of Envelope's fields, when env_direct */
static int env_direct = 0;

static PyObject *
configure_envelopes(PyObject *self, PyObject *args)
{
    PyObject *types, *tenants, *valid_ts, *cls;
    if (!PyArg_ParseTuple(args, "O!O!O!O", &PyDict_Type, &types, &PyDict_Type, &tenants, &PyDict_Type,
                          &valid_ts, &cls))
        return NULL;
    /* The class's seven fields, in its __init__ order, as object slots: an envelope is then
     * filled in directly rather than through the dataclass's Python __init__. Any other
     * layout (not slotted, other fields) is built by calling the class. */
    static const char *names[7] = {"id",       "event_type",         "timestamp", "payload",
                                   "idempotency_key", "payload_schema_ref", "source"};
    int direct = PyType_Check(cls);
    PyObject *init_fields = direct ? PyObject_GetAttrString(cls, "__dataclass_fields__") : NULL;
    if (init_fields == NULL) {
        PyErr_Clear();
        direct = 0;
    } else {
        direct = PyDict_Check(init_fields) && PyDict_GET_SIZE(init_fields) == 7;
        Py_DECREF(init_fields);
    }
    for (int k = 0; k < 7 && direct; k++) {
        PyObject *descr = PyDict_GetItemString(((PyTypeObject *)cls)->tp_dict, names[k]);
        if (descr == NULL || !PyObject_TypeCheck(descr, &PyMemberDescr_Type)) {
            direct = 0;
            break;
        }
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            direct = 0;
            break;
        }
        env_offsets[k] = member->offset;
    }
    env_direct = direct;
    Py_XSETREF(env_types, Py_NewRef(types));
    Py_XSETREF(env_tenants, Py_NewRef(tenants));
    Py_XSETREF(env_valid_ts, Py_NewRef(valid_ts));
    Py_XSETREF(env_class, Py_NewRef(cls));
    return PyBool_FromLong(direct);
}

/* An instance of the envelope class holding the seven fields (borrowed here, referenced by it). */
static PyObject *
new_envelope(PyObject *const *fields)
{
    if (!env_direct)
        return PyObject_Vectorcall(env_class, fields, 7, NULL);
    PyTypeObject *cls = (PyTypeObject *)env_class;
    PyObject *obj = cls->tp_alloc(cls, 0);
    if (obj == NULL)
        return NULL;
    for (int k = 0; k < 7; k++)
        *(PyObject **)((char *)obj + env_offsets[k]) = Py_NewRef(fields[k]);
    return obj;
}

static PyObject *
uuid_text(const char *key, Py_ssize_t n)
{
    /* The low-level calls: OpenSSL 3's one-shot SHA1() looks the algorithm up on every call. */
    unsigned char d[SHA_DIGEST_LENGTH];
    SHA_CTX ctx;
    SHA1_Init(&ctx);
    SHA1_Update(&ctx, namespace_bytes, 16);
    SHA1_Update(&ctx, key, (size_t)n);
    SHA1_Final(d, &ctx);
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

/* "<type>:<tenant>:<subject>[:<discriminator>]@<lsn>": joined by hand when every part is
 * ASCII (the common case), else by PyUnicode_FromFormat. */
static PyObject *
build_key(PyObject *event_type, PyObject *tenant, PyObject *subject, PyObject *discriminator, PyObject *lsn)
{
    PyObject *parts[4] = {event_type, tenant, subject, discriminator};
    int n = discriminator == Py_None ? 3 : 4;
    int ascii = PyUnicode_IS_ASCII(lsn);
    Py_ssize_t size = PyUnicode_GET_LENGTH(lsn) + n; /* n-1 colons and the @ */
    for (int k = 0; k < n; k++) {
        ascii = ascii && PyUnicode_IS_ASCII(parts[k]);
        size += PyUnicode_GET_LENGTH(parts[k]);
    }
    if (!ascii) {
        return discriminator == Py_None
                   ? PyUnicode_FromFormat("%U:%U:%U@%U", event_type, tenant, subject, lsn)
                   : PyUnicode_FromFormat("%U:%U:%U:%U@%U", event_type, tenant, subject, discriminator, lsn);
    }
    PyObject *key = PyUnicode_New(size, 127);
    if (key == NULL)
        return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(key);
    for (int k = 0; k < n; k++) {
        if (k)
            *out++ = ':';
        memcpy(out, PyUnicode_1BYTE_DATA(parts[k]), (size_t)PyUnicode_GET_LENGTH(parts[k]));
        out += PyUnicode_GET_LENGTH(parts[k]);
    }
    *out++ = '@';
    memcpy(out, PyUnicode_1BYTE_DATA(lsn), (size_t)PyUnicode_GET_LENGTH(lsn));
    return key;
}

/* envelope(draft, source, lsn_text) -> Envelope, or None when the draft is not the common case
 * (an unknown or uncompiled type, a tenant not seen before, a subject that is not lower-case
 * uuid text, a discriminator that is not plain text, a payload the plan leaves to pydantic, a
 * tenant mismatch): the caller's general path then decides, and reports every error. */
static PyObject *
envelope(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 && nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "envelope(draft, source, lsn_text, adopt=False)");
        return NULL;
    }
    int adopt = nargs == 4 ? PyObject_IsTrue(args[3]) : 0;
    if (adopt < 0)
        return NULL;
    if (env_types == NULL || !namespace_set) {
        PyErr_SetString(PyExc_RuntimeError, "configure_envelopes() and set_namespace() first");
        return NULL;
    }
    PyObject *draft = args[0], *source = args[1], *lsn = args[2];
    if (!PyTuple_Check(draft) || PyTuple_GET_SIZE(draft) < 5 || !PyUnicode_CheckExact(lsn))
        Py_RETURN_NONE;
    PyObject *event_type = PyTuple_GET_ITEM(draft, 0), *tenant = PyTuple_GET_ITEM(draft, 1);
    PyObject *subject = PyTuple_GET_ITEM(draft, 2), *payload_in = PyTuple_GET_ITEM(draft, 3);
    PyObject *discriminator = PyTuple_GET_ITEM(draft, 4);
    if (!PyUnicode_CheckExact(event_type) || !PyUnicode_CheckExact(tenant) || !is_uuid(subject))
        Py_RETURN_NONE;
    if (discriminator != Py_None) {
        if (!plain_text(discriminator) || PyUnicode_GET_LENGTH(discriminator) == 0)
            Py_RETURN_NONE;
        Py_ssize_t at = PyUnicode_FindChar(discriminator, '@', 0, PyUnicode_GET_LENGTH(discriminator), 1);
        if (at != -1)
            Py_RETURN_NONE; /* -2 (an error) cannot happen on a valid str */
    }
    PyObject *spec = PyDict_GetItemWithError(env_types, event_type);
    if (spec == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    PyObject *canonical_tenant = PyDict_GetItemWithError(env_tenants, tenant);
    if (canonical_tenant == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2 ||
        !PyObject_TypeCheck(PyTuple_GET_ITEM(spec, 0), &PlanType) || !PyUnicode_Check(canonical_tenant)) {
        PyErr_SetString(PyExc_TypeError, "configure_envelopes: types maps to (Plan, schema ref), tenants to text");
        return NULL;
    }
    /* held: the check below may run Python code, which could replace these dicts' entries */
    Py_INCREF(spec);
    Py_INCREF(canonical_tenant);
    PyObject *payload = plan_check((PlanObject *)PyTuple_GET_ITEM(spec, 0), payload_in, env_valid_ts, adopt);
    if (payload == NULL || payload == Py_None) {
        Py_DECREF(spec);
        Py_DECREF(canonical_tenant);
        return payload;
    }
    PyObject *result = NULL, *key = NULL, *id = NULL;
    PyObject *payload_tenant = PyDict_GetItemWithError(payload, str_tenant_id);
    PyObject *occurred = payload_tenant ? PyDict_GetItemWithError(payload, str_occurred_at) : NULL;
    if (occurred == NULL) {
        if (PyErr_Occurred())
            goto done;
        goto fallback;
    }
    if (!PyUnicode_CheckExact(payload_tenant))
        goto fallback;
    int differs = PyUnicode_Compare(payload_tenant, canonical_tenant);
    if (differs == -1 && PyErr_Occurred())
        goto done;
    if (differs)
        goto fallback; /* the general path names the mismatch */
    key = build_key(event_type, canonical_tenant, subject, discriminator, lsn);
    if (key == NULL)
        goto done;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(key, &n);
    if (utf8 == NULL)
        goto done;
    id = uuid_text(utf8, n);
    if (id == NULL)
        goto done;
    PyObject *fields[7] = {id, event_type, occurred, payload, key, PyTuple_GET_ITEM(spec, 1), source};
    result = new_envelope(fields);
    goto done;
fallback:
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(id);
    Py_XDECREF(key);
    Py_DECREF(payload);
    Py_DECREF(spec);
    Py_DECREF(canonical_tenant);
    return result;
}

/* --- the envelope's JSON ------------------------------------------------------------------- */

static PyObject *json_dumps = NULL, *json_option = NULL; /* orjson.dumps, OPT_SORT_KEYS */
static PyObject *json_kwnames = NULL;                     /* ("option",) */

/* Text that needs no JSON escaping and is ASCII: written between quotes as it is. */
static int
json_plain(PyObject *v)
{
    if (!PyUnicode_CheckExact(v) || !PyUnicode_IS_ASCII(v))
        return 0;
    const unsigned char *s = PyUnicode_1BYTE_DATA(v);
    Py_ssize_t n = PyUnicode_GET_LENGTH(v);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (s[i] < 0x20 || s[i] == '"' || s[i] == '\\')
            return 0;
    }
    return 1;
}

static char *
put(char *out, const char *text, Py_ssize_t n)
{
    memcpy(out, text, (size_t)n);
    return out + n;
}

static char *
put_text(char *out, PyObject *v)
{
    *out++ = '"';
    out = put(out, (const char *)PyUnicode_1BYTE_DATA(v), PyUnicode_GET_LENGTH(v));
    *out++ = '"';
    return out;
}

/* envelope_json(id, event_type, timestamp, payload, key, schema_ref, source_json) -> bytes,
 * the bytes orjson writes for the envelope dict with sorted keys (its seven keys are in that
 * order already, so only the payload is handed to orjson); None when a text field would need
 * escaping (the caller then asks orjson for the whole). */
/* The envelope's JSON from its seven fields (borrowed), or None when a text field would need
 * escaping. */
static PyObject *
write_envelope(PyObject *id, PyObject *event_type, PyObject *timestamp, PyObject *payload, PyObject *key,
               PyObject *schema_ref, PyObject *source)
{
    if (json_dumps == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "configure_json() first");
        return NULL;
    }
    if (!json_plain(id) || !json_plain(event_type) || !json_plain(timestamp) || !json_plain(key) ||
        !json_plain(schema_ref) || !PyBytes_CheckExact(source))
        Py_RETURN_NONE;
    PyObject *dump_args[2] = {payload, json_option};
    PyObject *body = PyObject_Vectorcall(json_dumps, dump_args, 1, json_kwnames);
    if (body == NULL)
        return NULL;
    if (!PyBytes_CheckExact(body)) {
        Py_DECREF(body);
        PyErr_SetString(PyExc_TypeError, "orjson.dumps returned no bytes");
        return NULL;
    }
    static const char k_event[] = "{\"eventType\":", k_id[] = ",\"id\":", k_key[] = ",\"idempotencyKey\":",
                      k_payload[] = ",\"payload\":", k_ref[] = ",\"payloadSchemaRef\":", k_source[] = ",\"source\":",
                      k_time[] = ",\"timestamp\":";
    Py_ssize_t size = (Py_ssize_t)(sizeof k_event + sizeof k_id + sizeof k_key + sizeof k_payload + sizeof k_ref +
                                   sizeof k_source + sizeof k_time - 7) +
                      PyUnicode_GET_LENGTH(event_type) + PyUnicode_GET_LENGTH(id) + PyUnicode_GET_LENGTH(key) +
                      PyUnicode_GET_LENGTH(schema_ref) + PyUnicode_GET_LENGTH(timestamp) + 10 +
                      PyBytes_GET_SIZE(body) + PyBytes_GET_SIZE(source) + 1;
    PyObject *out = PyBytes_FromStringAndSize(NULL, size);
    if (out == NULL) {
        Py_DECREF(body);
        return NULL;
    }
    char *p = PyBytes_AS_STRING(out);
    p = put(p, k_event, sizeof k_event - 1);
    p = put_text(p, event_type);
    p = put(p, k_id, sizeof k_id - 1);
    p = put_text(p, id);
    p = put(p, k_key, sizeof k_key - 1);
    p = put_text(p, key);
    p = put(p, k_payload, sizeof k_payload - 1);
    p = put(p, PyBytes_AS_STRING(body), PyBytes_GET_SIZE(body));
    p = put(p, k_ref, sizeof k_ref - 1);
    p = put_text(p, schema_ref);
    p = put(p, k_source, sizeof k_source - 1);
    p = put(p, PyBytes_AS_STRING(source), PyBytes_GET_SIZE(source));
    p = put(p, k_time, sizeof k_time - 1);
    p = put_text(p, timestamp);
    *p++ = '}';
    Py_DECREF(body);
    if (p - PyBytes_AS_STRING(out) != size) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "envelope_json: size mismatch");
        return NULL;
    }
    return out;
}

static PyObject *
envelope_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "envelope_json(id, event_type, timestamp, payload, key, schema_ref, source)");
        return NULL;
    }
    return write_envelope(args[0], args[1], args[2], args[3], args[4], args[5], args[6]);
}

static PyObject *str_to_json_bytes = NULL;

/* envelopes_json(envelopes, source_bytes) -> list of bytes: each envelope's to_json_bytes(),
 * read straight from its slots when it is the configured slotted Envelope; source_bytes(source)
 * gives a Source's JSON and is asked once per run of envelopes sharing one. */
static PyObject *
envelopes_json(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "envelopes_json(envelopes, source_bytes)");
        return NULL;
    }
    PyObject *seq = PySequence_Tuple(args[0]); /* a snapshot: the callback cannot shorten it */
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    PyObject *out = PyList_New(n), *last_source = NULL, *last_bytes = NULL;
    if (out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *env = PyTuple_GET_ITEM(seq, i), *json = NULL;
        if (env_direct && Py_TYPE(env) == (PyTypeObject *)env_class) {
            /* held: source_bytes runs Python code, which could change the envelope or the list */
            PyObject *f[7];
            Py_INCREF(env);
            int k = 0;
            for (; k < 7; k++) {
                f[k] = *(PyObject **)((char *)env + env_offsets[k]);
                if (f[k] == NULL)
                    break;
                Py_INCREF(f[k]);
            }
            int ok = k == 7;
            if (!ok)
                PyErr_SetString(PyExc_AttributeError, "an envelope field is not set");
            if (ok && f[6] != last_source) {
                PyObject *raw = PyObject_CallOneArg(args[1], f[6]);
                ok = raw != NULL;
                if (ok) {
                    Py_XSETREF(last_bytes, raw);
                    Py_XSETREF(last_source, Py_NewRef(f[6]));
                }
            }
            if (ok)
                json = write_envelope(f[0], f[1], f[2], f[3], f[4], f[5], last_bytes);
            for (int j = 0; j < k; j++)
                Py_DECREF(f[j]);
            if (!ok || json == NULL) {
                Py_DECREF(env);
                goto error;
            }
            if (json == Py_None)
                Py_CLEAR(json);
            if (json == NULL)
                json = PyObject_CallMethodNoArgs(env, str_to_json_bytes);
            Py_DECREF(env);
            if (json == NULL)
                goto error;
            PyList_SET_ITEM(out, i, json);
            continue;
        }
        if (json == NULL)
            json = PyObject_CallMethodNoArgs(env, str_to_json_bytes);
        if (json == NULL)
            goto error;
        PyList_SET_ITEM(out, i, json);
    }
    Py_DECREF(seq);
    Py_XDECREF(last_source);
    Py_XDECREF(last_bytes);
    return out;
error:
    Py_DECREF(seq);
    Py_XDECREF(out);
    Py_XDECREF(last_source);
    Py_XDECREF(last_bytes);
    return NULL;
}

static PyObject *
configure_json(PyObject *self, PyObject *args)
{
    PyObject *dumps, *option;
    if (!PyArg_ParseTuple(args, "OO", &dumps, &option))
        return NULL;
    /* interned: orjson matches keyword names by identity */
    PyObject *name = PyUnicode_InternFromString("option");
    PyObject *kwnames = name ? PyTuple_Pack(1, name) : NULL;
    Py_XDECREF(name);
    if (kwnames == NULL)
        return NULL;
    Py_XSETREF(json_kwnames, kwnames);
    Py_XSETREF(json_dumps, Py_NewRef(dumps));
    Py_XSETREF(json_option, Py_NewRef(option));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure_json", configure_json, METH_VARARGS, "configure_json(orjson.dumps, orjson.OPT_SORT_KEYS)"},
    {"envelopes_json", (PyCFunction)(void (*)(void))envelopes_json, METH_FASTCALL,
     "envelopes_json(envelopes, source_bytes) -> list of each envelope's JSON bytes"},
    {"envelope_json", (PyCFunction)(void (*)(void))envelope_json, METH_FASTCALL,
     "envelope_json(id, event_type, timestamp, payload, key, schema_ref, source_json) -> bytes or None"},
    {"set_namespace", set_namespace, METH_O, "set_namespace(bytes16): the uuid5 namespace of event_id."},
    {"event_id", event_id, METH_O, "event_id(key) -> str(uuid5(namespace, key))."},
    {"configure_envelopes", configure_envelopes, METH_VARARGS,
     "configure_envelopes(types, tenants, valid_timestamps, envelope_class)."},
    {"envelope", (PyCFunction)(void (*)(void))envelope, METH_FASTCALL,
     "envelope(draft, source, lsn_text) -> Envelope or None (see catalog/_speedups.c)."},
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
    for (int c = 0; c < 256; c++)
        hex_class[c] = ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) ? 1 : (c >= 'A' && c <= 'F') ? 2 : 0;
    str_to_json_bytes = PyUnicode_InternFromString("to_json_bytes");
    if (str_to_json_bytes == NULL)
        return NULL;
    str_tenant_id = PyUnicode_InternFromString("tenantId");
    str_occurred_at = PyUnicode_InternFromString("occurredAt");
    if (str_tenant_id == NULL || str_occurred_at == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    /* What catalog/envelope.py expects (API_VERSION there): a build older than the Python
     * that calls it is not used. 2: envelope() takes adopt. */
    if (PyModule_AddObjectRef(m, "Plan", (PyObject *)&PlanType) < 0 ||
        PyModule_AddIntConstant(m, "API_VERSION", 2) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
