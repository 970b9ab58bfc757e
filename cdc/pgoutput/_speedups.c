/*
 * Compiled versions of the decoder's two per-column loops (the hot path of a 52-column
 * FULL-identity row image, twice per UPDATE).  Each has a pure-Python twin that is used
 * when this module is not built; tests hold the two equal on the golden fixtures and on
 * random, truncated and byte-flipped messages.
 *
 *   split_tuple(buf, pos) -> (values, binary_mask, end)
 *       one pgoutput TupleData starting at buf[pos]: values is a tuple of bytes (text or
 *       binary column), None ('n') or the UNCHANGED_TOAST marker ('u').  Errors raise the
 *       error class given to configure() with the same message as the Python twin.
 *
 *   changed_names(names, before, after) -> frozenset
 *       the names whose raw values differ between two equally long value tuples.
 *
 *   decode_row(buf) -> Insert | Update | Delete
 *       a whole row message, exactly as decode_message's Python handlers decode it (the
 *       classes are given to configure_rows()): one call instead of five Python frames.
 *
 *   RowReader(row), configure_json(orjson.Fragment, orjson.loads)
 *       the compiled base of cdc.values.JsonRowView: get(name, default), [name] and `in`,
 *       with the row's index, values and converters taken once when the view is made.
 *
 *   has_unchanged(values) -> bool
 *       whether the unchanged-TOAST marker is one of the values (identity only).
 *
 *   configure(unchanged_marker, error_class) must be called once before split_tuple.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *unchanged_marker = NULL;
static PyObject *error_class = NULL;

static PyObject *
configure(PyObject *self, PyObject *args)
{
    PyObject *marker, *error;
    if (!PyArg_ParseTuple(args, "OO", &marker, &error))
        return NULL;
    Py_XSETREF(unchanged_marker, Py_NewRef(marker));
    Py_XSETREF(error_class, Py_NewRef(error));
    Py_RETURN_NONE;
}

static PyObject *
fail(const char *message)
{
    PyErr_SetString(error_class ? error_class : PyExc_ValueError, message);
    return NULL;
}

/* Where each value of one TupleData lies: the parse both row-image forms share. */
typedef struct {
    Py_ssize_t n;
    Py_ssize_t *offset; /* per column: start in the message */
    Py_ssize_t *length; /* per column: byte length, or -1 (NULL) / -2 (unchanged TOAST) */
    PyObject *mask;     /* the binary-column bitmask (an int) */
} Image;

static void
image_free(Image *im)
{
    PyMem_Free(im->offset);
    PyMem_Free(im->length);
    Py_CLEAR(im->mask);
    im->offset = im->length = NULL;
}

/* Parse the TupleData at buf[*pos_io] into `im` (arrays it then owns) and move *pos_io past
 * it; -1 with the error set (DecodeError for a malformed image) and nothing held on failure. */
static int
parse_image(const unsigned char *buf, Py_ssize_t len, Py_ssize_t *pos_io, Image *im)
{
    Py_ssize_t pos = *pos_io;
    im->n = 0;
    im->offset = im->length = NULL;
    im->mask = NULL;
    if (pos < 0 || pos > len - 2) {
        fail("row image truncated: a column header runs past the end of the message");
        return -1;
    }
    Py_ssize_t ncols = ((Py_ssize_t)buf[pos] << 8) | buf[pos + 1];
    pos += 2;
    im->offset = PyMem_Malloc(sizeof(Py_ssize_t) * (ncols ? ncols : 1));
    im->length = PyMem_Malloc(sizeof(Py_ssize_t) * (ncols ? ncols : 1));
    PyObject *mask_big = NULL; /* only for binary columns past the 64th */
    unsigned long long mask_small = 0;
    if (im->offset == NULL || im->length == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    for (Py_ssize_t i = 0; i < ncols; i++) {
        if (pos >= len) {
            fail("row image truncated: fewer columns than its column count");
            goto error;
        }
        unsigned char kind = buf[pos];
        im->offset[i] = pos;
        if (kind == 't' || kind == 'b') {
            if (pos + 5 > len) {
                fail("row image truncated: a column header runs past the end of the message");
                goto error;
            }
            unsigned long long length = ((unsigned long long)buf[pos + 1] << 24) |
                                        ((unsigned long long)buf[pos + 2] << 16) |
                                        ((unsigned long long)buf[pos + 3] << 8) | buf[pos + 4];
            pos += 5;
            if ((unsigned long long)(len - pos) < length) {
                fail("column value runs past the end of the message");
                goto error;
            }
            im->offset[i] = pos;
            im->length[i] = (Py_ssize_t)length;
            pos += (Py_ssize_t)length;
            if (kind == 'b') {
                if (i < 64) {
                    mask_small |= 1ULL << i;
                } else {
                    PyObject *one = PyLong_FromLong(1), *shift = PyLong_FromSsize_t(i), *bit = NULL;
                    if (one && shift)
                        bit = PyNumber_Lshift(one, shift);
                    Py_XDECREF(one);
                    Py_XDECREF(shift);
                    if (bit == NULL)
                        goto error;
                    PyObject *merged = mask_big ? PyNumber_Or(mask_big, bit) : Py_NewRef(bit);
                    Py_DECREF(bit);
                    Py_XSETREF(mask_big, merged);
                    if (mask_big == NULL)
                        goto error;
                }
            }
        } else if (kind == 'n' || kind == 'u') {
            im->length[i] = kind == 'n' ? -1 : -2;
            pos += 1;
        } else {
            char message[64];
            snprintf(message, sizeof message, "unknown tuple column kind 0x%02x", kind);
            fail(message);
            goto error;
        }
        im->n = i + 1;
    }
    im->mask = PyLong_FromUnsignedLongLong(mask_small);
    if (im->mask != NULL && mask_big != NULL)
        Py_SETREF(im->mask, PyNumber_Or(im->mask, mask_big));
    Py_XDECREF(mask_big);
    if (im->mask == NULL) {
        image_free(im);
        return -1;
    }
    *pos_io = pos;
    return 0;
error:
    Py_XDECREF(mask_big);
    image_free(im);
    return -1;
}

/* One TupleData at buf[*pos]: its values (a new tuple) and, in *mask_out, its binary-column
 * mask (a new int); *pos moves past it. NULL with the error set on failure. */
static PyObject *
split_at(const unsigned char *buf, Py_ssize_t len, Py_ssize_t *pos_io, PyObject **mask_out)
{
    Image im;
    if (parse_image(buf, len, pos_io, &im) < 0)
        return NULL;
    PyObject *values = PyTuple_New(im.n);
    for (Py_ssize_t i = 0; values != NULL && i < im.n; i++) {
        Py_ssize_t length = im.length[i];
        PyObject *item = length == -1   ? Py_NewRef(Py_None)
                         : length == -2 ? Py_NewRef(unchanged_marker)
                                        : PyBytes_FromStringAndSize((const char *)buf + im.offset[i], length);
        if (item == NULL)
            Py_CLEAR(values);
        else
            PyTuple_SET_ITEM(values, i, item);
    }
    if (values != NULL)
        *mask_out = Py_NewRef(im.mask);
    image_free(&im);
    return values;
}

static PyObject *
split_tuple(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "split_tuple(buf, pos)");
        return NULL;
    }
    if (unchanged_marker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "split_tuple before configure()");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    PyObject *result = NULL, *mask = NULL;
    Py_ssize_t pos = PyLong_AsSsize_t(args[1]);
    if (pos == -1 && PyErr_Occurred())
        goto done;
    PyObject *values = split_at((const unsigned char *)view.buf, view.len, &pos, &mask);
    if (values == NULL)
        goto done;
    PyObject *end = PyLong_FromSsize_t(pos);
    if (end == NULL) {
        Py_DECREF(values);
        Py_DECREF(mask);
        goto done;
    }
    result = PyTuple_Pack(3, values, mask, end);
    Py_DECREF(values);
    Py_DECREF(mask);
    Py_DECREF(end);
done:
    PyBuffer_Release(&view);
    return result;
}

/* A NamedTuple instance of cls holding n new references (stolen, also on failure). */
static PyObject *
named(PyObject *cls, Py_ssize_t n, PyObject **items)
{
    PyObject *obj = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL)
            goto bad;
    }
    obj = ((PyTypeObject *)cls)->tp_alloc((PyTypeObject *)cls, n);
    if (obj == NULL)
        goto bad;
    for (Py_ssize_t i = 0; i < n; i++)
        PyTuple_SET_ITEM(obj, i, items[i]);
    return obj;
bad:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    return NULL;
}

/* --- Values: a row image's values, made into objects only when read --------------------------
 *
 * decode_row keeps each row image as offsets into the message's bytes: a 52-column UPDATE
 * carries 104 values of which derivers read a handful, and making (and freeing) a bytes object
 * for each was a large share of the per-change cost. A Values behaves as the tuple it stands
 * for: len, [i] (the same object on every read), iteration, == with tuples and other Values,
 * repr; it is not hashable (nothing hashes a row image; keys are tuples of its items). */

typedef struct {
    PyObject_HEAD
    PyObject *owner;    /* the message bytes */
    Py_ssize_t n;
    Py_ssize_t *offset; /* per column: start in owner */
    Py_ssize_t *length; /* per column: byte length, or -1 (NULL) / -2 (unchanged TOAST) */
    PyObject **items;   /* made on first read */
} ValuesObject;

static PyTypeObject ValuesType;
#define Values_Check(op) (Py_TYPE(op) == &ValuesType)

static void
Values_dealloc(ValuesObject *self)
{
    for (Py_ssize_t i = 0; i < self->n; i++)
        Py_XDECREF(self->items[i]);
    PyMem_Free(self->items);
    PyMem_Free(self->offset);
    PyMem_Free(self->length);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Values_length(ValuesObject *self)
{
    return self->n;
}

/* Borrowed: the i-th value, made on first read. */
static PyObject *
values_at(ValuesObject *self, Py_ssize_t i)
{
    PyObject *item = self->items[i];
    if (item != NULL)
        return item;
    Py_ssize_t length = self->length[i];
    if (length == -1)
        item = Py_NewRef(Py_None);
    else if (length == -2)
        item = Py_NewRef(unchanged_marker);
    else
        item = PyBytes_FromStringAndSize(PyBytes_AS_STRING(self->owner) + self->offset[i], length);
    self->items[i] = item;
    return item;
}

static PyObject *
Values_item(ValuesObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "row image index out of range");
        return NULL;
    }
    PyObject *item = values_at(self, i);
    return item ? Py_NewRef(item) : NULL;
}

static PyObject *
values_tuple(ValuesObject *self)
{
    PyObject *out = PyTuple_New(self->n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->n; i++) {
        PyObject *item = values_at(self, i);
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, Py_NewRef(item));
    }
    return out;
}

/* 1 when values i of a and j of b are equal raw values, 0 when not (no objects made). */
static int
values_same(ValuesObject *a, Py_ssize_t i, ValuesObject *b, Py_ssize_t j)
{
    Py_ssize_t la = a->length[i], lb = b->length[j];
    if (la != lb)
        return 0;
    if (la < 0)
        return 1;
    return memcmp(PyBytes_AS_STRING(a->owner) + a->offset[i], PyBytes_AS_STRING(b->owner) + b->offset[j],
                  (size_t)la) == 0;
}

static PyObject *
Values_richcompare(PyObject *a, PyObject *b, int op)
{
    if (op != Py_EQ && op != Py_NE)
        Py_RETURN_NOTIMPLEMENTED;
    if (Values_Check(a) && Values_Check(b)) {
        ValuesObject *x = (ValuesObject *)a, *y = (ValuesObject *)b;
        int equal = x->n == y->n;
        for (Py_ssize_t i = 0; equal && i < x->n; i++)
            equal = values_same(x, i, y, i);
        return PyBool_FromLong(op == Py_EQ ? equal : !equal);
    }
    PyObject *mine = Values_Check(a) ? a : b, *other = Values_Check(a) ? b : a;
    if (!PyTuple_Check(other))
        Py_RETURN_NOTIMPLEMENTED;
    PyObject *as_tuple = values_tuple((ValuesObject *)mine);
    if (as_tuple == NULL)
        return NULL;
    PyObject *result = PyObject_RichCompare(as_tuple, other, op);
    Py_DECREF(as_tuple);
    return result;
}

static PyObject *
Values_repr(ValuesObject *self)
{
    PyObject *as_tuple = values_tuple(self);
    if (as_tuple == NULL)
        return NULL;
    PyObject *out = PyObject_Repr(as_tuple);
    Py_DECREF(as_tuple);
    return out;
}

static PyObject *
Values_subscript(ValuesObject *self, PyObject *key)
{
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred())
            return NULL;
        if (i < 0)
            i += self->n;
        return Values_item(self, i);
    }
    PyObject *as_tuple = values_tuple(self); /* slices: as the tuple slices */
    if (as_tuple == NULL)
        return NULL;
    PyObject *out = PyObject_GetItem(as_tuple, key);
    Py_DECREF(as_tuple);
    return out;
}

static PyMappingMethods Values_as_mapping = {
    .mp_length = (lenfunc)Values_length,
    .mp_subscript = (binaryfunc)Values_subscript,
};

static PySequenceMethods Values_as_sequence = {
    .sq_length = (lenfunc)Values_length,
    .sq_item = (ssizeargfunc)Values_item,
};

static PyTypeObject ValuesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cdc.pgoutput._speedups.Values",
    .tp_basicsize = sizeof(ValuesObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A row image's raw values, made into objects when read (behaves as the tuple).",
    .tp_dealloc = (destructor)Values_dealloc,
    .tp_as_sequence = &Values_as_sequence,
    .tp_as_mapping = &Values_as_mapping,
    .tp_richcompare = Values_richcompare,
    .tp_repr = (reprfunc)Values_repr,
    .tp_hash = PyObject_HashNotImplemented,
};

/* One TupleData at buf[*pos] of the bytes object `owner`, as a Values; same checks and errors
 * as split_at. */
static PyObject *
values_from(PyObject *owner, Py_ssize_t *pos_io, PyObject **mask_out)
{
    Image im;
    if (parse_image((const unsigned char *)PyBytes_AS_STRING(owner), PyBytes_GET_SIZE(owner), pos_io, &im) < 0)
        return NULL;
    ValuesObject *self = PyObject_New(ValuesObject, &ValuesType);
    PyObject **items = self ? PyMem_Calloc(im.n ? im.n : 1, sizeof(PyObject *)) : NULL;
    if (items == NULL) {
        if (self != NULL) {
            PyErr_NoMemory();
            self->owner = NULL;
            self->n = 0;
            self->offset = self->length = NULL;
            self->items = NULL;
            Py_DECREF(self);
        }
        image_free(&im);
        return NULL;
    }
    self->owner = Py_NewRef(owner);
    self->n = im.n;
    self->offset = im.offset; /* the arrays move to the Values */
    self->length = im.length;
    self->items = items;
    *mask_out = im.mask;
    return (PyObject *)self;
}

/* Borrowed: item i of a tuple or a Values (i in range). */
static PyObject *
item_of(PyObject *values, Py_ssize_t i)
{
    return Values_Check(values) ? values_at((ValuesObject *)values, i) : PyTuple_GET_ITEM(values, i);
}

static Py_ssize_t
size_of(PyObject *values)
{
    return Values_Check(values) ? ((ValuesObject *)values)->n : PyTuple_GET_SIZE(values);
}

static int
is_values(PyObject *v)
{
    return Values_Check(v) || PyTuple_Check(v);
}

static PyObject *cls_tuple_data = NULL, *cls_insert = NULL, *cls_update = NULL, *cls_delete = NULL;

static PyObject *
configure_rows(PyObject *self, PyObject *args)
{
    PyObject *t, *i, *u, *d;
    if (!PyArg_ParseTuple(args, "O!O!O!O!", &PyType_Type, &t, &PyType_Type, &i, &PyType_Type, &u, &PyType_Type,
                          &d))
        return NULL;
    PyObject *classes[4] = {t, i, u, d};
    for (int k = 0; k < 4; k++) {
        if (!PyType_IsSubtype((PyTypeObject *)classes[k], &PyTuple_Type)) {
            PyErr_SetString(PyExc_TypeError, "configure_rows() takes four tuple classes");
            return NULL;
        }
    }
    Py_XSETREF(cls_tuple_data, Py_NewRef(t));
    Py_XSETREF(cls_insert, Py_NewRef(i));
    Py_XSETREF(cls_update, Py_NewRef(u));
    Py_XSETREF(cls_delete, Py_NewRef(d));
    Py_RETURN_NONE;
}

static PyObject *
tuple_data_at(PyObject *owner, const unsigned char *buf, Py_ssize_t len, Py_ssize_t *pos)
{
    PyObject *mask = NULL;
    /* A bytes message cannot change under us: its images can stay offsets into it. */
    PyObject *values = PyBytes_CheckExact(owner) ? values_from(owner, pos, &mask) : split_at(buf, len, pos, &mask);
    if (values == NULL)
        return NULL;
    PyObject *items[2] = {values, mask};
    return named(cls_tuple_data, 2, items);
}

/* What decode_message's handlers say about a message cut short before a tuple. */
static PyObject *
truncated(const char *what)
{
    char message[96];
    snprintf(message, sizeof message, "malformed or truncated pgoutput message: %s", what);
    return fail(message);
}

/* decode_row(buf) -> Insert | Update | Delete: a whole row message, as decode_message's Python
 * handlers decode it (same classes, values and DecodeError cases). */
static PyObject *
decode_row(PyObject *self, PyObject *arg)
{
    if (cls_update == NULL || unchanged_marker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "decode_row before configure() and configure_rows()");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *buf = (const unsigned char *)view.buf;
    Py_ssize_t len = view.len, pos = 6;
    PyObject *result = NULL;
    if (len < 6) {
        truncated(len < 1 ? "IndexError" : "error");
        goto done;
    }
    unsigned char kind = buf[0], marker = buf[5];
    unsigned long oid = ((unsigned long)buf[1] << 24) | ((unsigned long)buf[2] << 16) |
                        ((unsigned long)buf[3] << 8) | buf[4];
    if (kind == 'I') {
        if (marker != 'N') {
            fail("insert without a new tuple");
            goto done;
        }
        PyObject *items[2] = {PyLong_FromUnsignedLong(oid), tuple_data_at(arg, buf, len, &pos)};
        result = named(cls_insert, 2, items);
    } else if (kind == 'U') {
        PyObject *old = NULL, *old_kind = NULL;
        if (marker == 'K' || marker == 'O') {
            old_kind = PyUnicode_FromOrdinal(marker);
            old = old_kind ? tuple_data_at(arg, buf, len, &pos) : NULL;
            if (old == NULL) {
                Py_XDECREF(old_kind);
                goto done;
            }
            if (pos >= len) {
                Py_DECREF(old);
                Py_DECREF(old_kind);
                truncated("IndexError");
                goto done;
            }
            marker = buf[pos++];
        }
        if (marker != 'N') {
            Py_XDECREF(old);
            Py_XDECREF(old_kind);
            fail("update without a new tuple");
            goto done;
        }
        PyObject *items[4] = {PyLong_FromUnsignedLong(oid), old_kind ? old_kind : Py_NewRef(Py_None),
                              old ? old : Py_NewRef(Py_None), tuple_data_at(arg, buf, len, &pos)};
        result = named(cls_update, 4, items);
    } else if (kind == 'D') {
        if (marker != 'K' && marker != 'O') {
            fail("delete without an old tuple");
            goto done;
        }
        PyObject *items[3] = {PyLong_FromUnsignedLong(oid), PyUnicode_FromOrdinal(marker),
                              tuple_data_at(arg, buf, len, &pos)};
        result = named(cls_delete, 3, items);
    } else {
        PyErr_SetString(PyExc_ValueError, "decode_row() takes an Insert, Update or Delete message");
        goto done;
    }
    if (result != NULL && pos != len) {
        char message[96];
        snprintf(message, sizeof message, "%zd unexpected trailing bytes after pgoutput message", len - pos);
        Py_CLEAR(result);
        fail(message);
    }
done:
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
changed_names(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyTuple_Check(args[0]) || !is_values(args[1]) || !is_values(args[2])) {
        PyErr_SetString(PyExc_TypeError, "changed_names(names, before, after) takes three tuples");
        return NULL;
    }
    PyObject *names = args[0], *before = args[1], *after = args[2];
    Py_ssize_t n = PyTuple_GET_SIZE(names);
    if (size_of(before) != n || size_of(after) != n) {
        PyErr_SetString(PyExc_ValueError, "changed_names: tuples of different lengths");
        return NULL;
    }
    int raw = Values_Check(before) && Values_Check(after); /* compare bytes where they lie */
    PyObject *out = PyFrozenSet_New(NULL);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        int same;
        if (raw) {
            same = values_same((ValuesObject *)before, i, (ValuesObject *)after, i);
        } else {
            PyObject *x = item_of(before, i), *y = item_of(after, i);
            if (x == NULL || y == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            if (x == y) {
                continue;
            } else if (PyBytes_CheckExact(x) && PyBytes_CheckExact(y)) {
                Py_ssize_t lx = PyBytes_GET_SIZE(x);
                same = lx == PyBytes_GET_SIZE(y) && memcmp(PyBytes_AS_STRING(x), PyBytes_AS_STRING(y), lx) == 0;
            } else {
                same = PyObject_RichCompareBool(x, y, Py_EQ);
                if (same < 0) {
                    Py_DECREF(out);
                    return NULL;
                }
            }
        }
        if (!same && PySet_Add(out, PyTuple_GET_ITEM(names, i)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* has_unchanged(values) -> bool: whether the marker is one of the values (by identity; the
 * tuple's own `in` asks bytes and the marker to compare, twice per column). */
static PyObject *
has_unchanged(PyObject *self, PyObject *values)
{
    if (Values_Check(values)) {
        ValuesObject *v = (ValuesObject *)values;
        for (Py_ssize_t i = 0; i < v->n; i++) {
            if (v->length[i] == -2)
                Py_RETURN_TRUE;
        }
        Py_RETURN_FALSE;
    }
    if (!PyTuple_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "has_unchanged() takes a tuple");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(values); i++) {
        if (PyTuple_GET_ITEM(values, i) == unchanged_marker)
            Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

/* --- RowReader: the compiled base of cdc.values.JsonRowView ---------------------------------- */

static PyObject *json_fragment = NULL, *json_loads = NULL; /* orjson.Fragment, orjson.loads */
static PyObject *str_shape, *str_index, *str_data, *str_mask, *str_json_attr, *str_json_converters, *str_json;

typedef struct {
    PyObject_HEAD
    PyObject *row;
    PyObject *index;      /* row.shape.index: name -> position */
    PyObject *data;       /* row.data */
    PyObject *converters; /* row.shape.json_converters() */
    PyObject *mask;       /* row.mask, or NULL when it is 0 (no binary columns) */
} RowReaderObject;

static int
RowReader_init(RowReaderObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *row;
    if (!PyArg_ParseTuple(args, "O:JsonRowView", &row))
        return -1;
    if (json_loads == NULL || unchanged_marker == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RowReader before configure() and configure_json()");
        return -1;
    }
    PyObject *shape = PyObject_GetAttr(row, str_shape);
    if (shape == NULL)
        return -1;
    PyObject *index = PyObject_GetAttr(shape, str_index);
    PyObject *converters = index ? PyObject_GetAttr(shape, str_json_attr) : NULL;
    if (converters == Py_None) {
        Py_SETREF(converters, PyObject_CallMethodNoArgs(shape, str_json_converters));
    }
    Py_DECREF(shape);
    PyObject *data = converters ? PyObject_GetAttr(row, str_data) : NULL;
    PyObject *mask = data ? PyObject_GetAttr(row, str_mask) : NULL;
    if (mask == NULL || !PyDict_Check(index) || !PyTuple_Check(converters) || !is_values(data) ||
        !PyLong_Check(mask) || PyTuple_GET_SIZE(converters) != size_of(data)) {
        if (mask != NULL)
            PyErr_SetString(PyExc_TypeError, "JsonRowView(row): not a Row");
        Py_XDECREF(index);
        Py_XDECREF(converters);
        Py_XDECREF(data);
        Py_XDECREF(mask);
        return -1;
    }
    int zero = PyObject_Not(mask);
    if (zero)
        Py_CLEAR(mask);
    Py_XSETREF(self->row, Py_NewRef(row));
    Py_XSETREF(self->index, index);
    Py_XSETREF(self->converters, converters);
    Py_XSETREF(self->data, data);
    Py_XSETREF(self->mask, mask);
    return 0;
}

/* The column's JSON value; `missing` (borrowed) when it is not a column or unknown. */
static PyObject *
reader_get(RowReaderObject *self, PyObject *name, PyObject *missing)
{
    if (self->index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "JsonRowView not initialised");
        return NULL;
    }
    PyObject *at = PyDict_GetItemWithError(self->index, name);
    if (at == NULL)
        return PyErr_Occurred() ? NULL : Py_NewRef(missing); /* unhashable: TypeError, as dict.get */
    Py_ssize_t i = PyLong_AsSsize_t(at);
    if (i < 0 || i >= size_of(self->data)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_IndexError, "column position out of range");
        return NULL;
    }
    if (self->mask == NULL && Values_Check(self->data) && PyTuple_GET_ITEM(self->converters, i) == Py_None) {
        /* A text column of a lazy image not read yet: its text straight from the message bytes,
         * without the bytes object a read of the Values would make (and keep). */
        ValuesObject *values = (ValuesObject *)self->data;
        Py_ssize_t length = values->length[i];
        if (values->items[i] == NULL && length >= 0)
            return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(values->owner) + values->offset[i], length, NULL);
    }
    PyObject *raw = item_of(self->data, i);
    if (raw == NULL)
        return NULL;
    if (raw == Py_None)
        Py_RETURN_NONE;
    if (raw == unchanged_marker)
        return Py_NewRef(missing);
    if (self->mask != NULL) {
        PyObject *shifted = PyNumber_Rshift(self->mask, at);
        if (shifted == NULL)
            return NULL;
        PyObject *one = PyLong_FromLong(1);
        PyObject *bit = one ? PyNumber_And(shifted, one) : NULL;
        Py_DECREF(shifted);
        Py_XDECREF(one);
        if (bit == NULL)
            return NULL;
        int set = PyObject_IsTrue(bit);
        Py_DECREF(bit);
        if (set < 0)
            return NULL;
        if (set)
            return PyObject_CallMethodOneArg(self->row, str_json, name);
    }
    PyObject *conv = PyTuple_GET_ITEM(self->converters, i);
    if (conv == Py_None) {
        if (!PyBytes_Check(raw)) {
            PyErr_SetString(PyExc_TypeError, "a text column's raw value is bytes");
            return NULL;
        }
        return PyUnicode_DecodeUTF8(PyBytes_AS_STRING(raw), PyBytes_GET_SIZE(raw), NULL);
    }
    if (conv == json_fragment)
        return PyObject_CallOneArg(json_loads, raw);
    return PyObject_CallOneArg(conv, raw);
}

static PyObject *
RowReader_get(RowReaderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get(name, default=None)");
        return NULL;
    }
    return reader_get(self, args[0], nargs == 2 ? args[1] : Py_None);
}

static PyObject *
RowReader_subscript(RowReaderObject *self, PyObject *name)
{
    PyObject *value = reader_get(self, name, unchanged_marker); /* the marker is never a value */
    if (value == unchanged_marker) {
        Py_DECREF(value);
        PyObject *args = PyTuple_Pack(1, name); /* a tuple name stays one argument */
        if (args != NULL) {
            PyErr_SetObject(PyExc_KeyError, args);
            Py_DECREF(args);
        }
        return NULL;
    }
    return value;
}

static int
RowReader_contains(RowReaderObject *self, PyObject *name)
{
    if (self->index == NULL)
        return 0;
    PyObject *at = PyDict_GetItemWithError(self->index, name);
    if (at == NULL)
        return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t i = PyLong_AsSsize_t(at);
    if (i < 0 || i >= size_of(self->data))
        return PyErr_Occurred() ? -1 : 0;
    if (Values_Check(self->data))
        return ((ValuesObject *)self->data)->length[i] != -2;
    return PyTuple_GET_ITEM(self->data, i) != unchanged_marker;
}

static PyObject *
RowReader_get_row(RowReaderObject *self, void *closure)
{
    if (self->row == NULL)
        Py_RETURN_NONE;
    return Py_NewRef(self->row);
}

static int
RowReader_traverse(RowReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->row);
    Py_VISIT(self->index);
    Py_VISIT(self->data);
    Py_VISIT(self->converters);
    Py_VISIT(self->mask);
    return 0;
}

static int
RowReader_clear(RowReaderObject *self)
{
    Py_CLEAR(self->row);
    Py_CLEAR(self->index);
    Py_CLEAR(self->data);
    Py_CLEAR(self->converters);
    Py_CLEAR(self->mask);
    return 0;
}

static void
RowReader_dealloc(RowReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    RowReader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef RowReader_methods[] = {
    {"get", (PyCFunction)(void (*)(void))RowReader_get, METH_FASTCALL,
     "get(name, default=None): the column's JSON value; default when it is no column or unknown"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef RowReader_getset[] = {
    {"row", (getter)RowReader_get_row, NULL, "the Row read", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMappingMethods RowReader_as_mapping = {
    .mp_subscript = (binaryfunc)RowReader_subscript,
};

static PySequenceMethods RowReader_as_sequence = {
    .sq_contains = (objobjproc)RowReader_contains,
};

static PyTypeObject RowReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "cdc.pgoutput._speedups.RowReader",
    .tp_basicsize = sizeof(RowReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Compiled reads of cdc.values.JsonRowView (get, [], in).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowReader_init,
    .tp_dealloc = (destructor)RowReader_dealloc,
    .tp_traverse = (traverseproc)RowReader_traverse,
    .tp_clear = (inquiry)RowReader_clear,
    .tp_methods = RowReader_methods,
    .tp_getset = RowReader_getset,
    .tp_as_mapping = &RowReader_as_mapping,
    .tp_as_sequence = &RowReader_as_sequence,
};

static PyObject *
configure_json(PyObject *self, PyObject *args)
{
    PyObject *fragment, *loads;
    if (!PyArg_ParseTuple(args, "OO", &fragment, &loads))
        return NULL;
    Py_XSETREF(json_fragment, Py_NewRef(fragment));
    Py_XSETREF(json_loads, Py_NewRef(loads));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure_json", configure_json, METH_VARARGS, "configure_json(orjson.Fragment, orjson.loads)"},
    {"configure_rows", configure_rows, METH_VARARGS, "configure_rows(TupleData, Insert, Update, Delete)"},
    {"decode_row", decode_row, METH_O, "decode_row(buf) -> Insert | Update | Delete"},
    {"has_unchanged", has_unchanged, METH_O, "has_unchanged(values) -> whether the unchanged-TOAST marker is among them"},
    {"configure", configure, METH_VARARGS, "configure(unchanged_marker, error_class)"},
    {"split_tuple", (PyCFunction)(void (*)(void))split_tuple, METH_FASTCALL,
     "split_tuple(buf, pos) -> (values, binary_mask, end)"},
    {"changed_names", (PyCFunction)(void (*)(void))changed_names, METH_FASTCALL,
     "changed_names(names, before, after) -> frozenset of the names whose values differ"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "Compiled hot loops of the pgoutput decoder and of row reads.", -1,
    methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RowReaderType) < 0 || PyType_Ready(&ValuesType) < 0)
        return NULL;
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {{&str_shape, "shape"},   {&str_index, "index"}, {&str_data, "data"},
                 {&str_mask, "mask"},     {&str_json_attr, "_json"},
                 {&str_json_converters, "json_converters"}, {&str_json, "json"}};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        if ((*names[k].slot = PyUnicode_InternFromString(names[k].text)) == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m != NULL && (PyModule_AddObjectRef(m, "RowReader", (PyObject *)&RowReaderType) < 0 ||
                      PyModule_AddObjectRef(m, "Values", (PyObject *)&ValuesType) < 0))
        Py_CLEAR(m);
    return m;
}
